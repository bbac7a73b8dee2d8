//! Enumerated protocol codes; every one keeps unknown values in an `Unknown(u8)` variant.

/// Declares a `u8` code enum with an `Unknown(u8)` fallback and lossless conversions.
macro_rules! code_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A code this implementation does not know; kept so it round-trips.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

#[allow(unused_imports)]
pub(crate) use code_enum;

code_enum! {
    /// Result of a data access (Blue Book / Green Book `Data-Access-Result`); ACTION results use
    /// the same codes (`Action-Result`), with 15/16 meaning long-action aborted / not in progress.
    pub enum DataAccessResult {
        Success = 0,
        HardwareFault = 1,
        TemporaryFailure = 2,
        ReadWriteDenied = 3,
        ObjectUndefined = 4,
        ObjectClassInconsistent = 9,
        ObjectUnavailable = 11,
        TypeUnmatched = 12,
        ScopeOfAccessViolated = 13,
        DataBlockUnavailable = 14,
        LongGetAborted = 15,
        NoLongGetInProgress = 16,
        LongSetAborted = 17,
        NoLongSetInProgress = 18,
        DataBlockNumberInvalid = 19,
        OtherReason = 250,
    }
}

code_enum! {
    /// Application context names (Green Book 9.4.2.2.2, `2.16.756.5.8.1.x`).
    pub enum ApplicationContext {
        LogicalNameNoCiphering = 1,
        ShortNameNoCiphering = 2,
        LogicalNameCiphering = 3,
        ShortNameCiphering = 4,
    }
}

code_enum! {
    /// Authentication mechanism names (Green Book 9.4.2.2.3, `2.16.756.5.8.2.x`).
    pub enum Mechanism {
        Lowest = 0,
        Low = 1,
        High = 2,
        HighMd5 = 3,
        HighSha1 = 4,
        HighGmac = 5,
        HighSha256 = 6,
        HighEcdsa = 7,
    }
}

code_enum! {
    /// AARE `result` (ACSE, IEC 8650).
    pub enum AssociationResult {
        Accepted = 0,
        RejectedPermanent = 1,
        RejectedTransient = 2,
    }
}

code_enum! {
    /// `acse-service-user` diagnostics (Green Book 9.4.2.2.4).
    pub enum UserDiagnostic {
        Null = 0,
        NoReasonGiven = 1,
        ApplicationContextNameNotSupported = 2,
        AuthenticationMechanismNameNotRecognised = 11,
        AuthenticationMechanismNameRequired = 12,
        AuthenticationFailure = 13,
        AuthenticationRequired = 14,
    }
}

code_enum! {
    /// Exception-response `state-error` (Green Book 9.5, `ExceptionResponse`).
    pub enum StateError {
        ServiceNotAllowed = 1,
        ServiceUnknown = 2,
    }
}

code_enum! {
    /// Exception-response `service-error`.
    pub enum ServiceError {
        OperationNotPossible = 1,
        ServiceNotSupported = 2,
        OtherReason = 3,
        PduTooLong = 4,
        DecipheringError = 5,
        InvocationCounterError = 6,
    }
}

code_enum! {
    /// RLRQ/RLRE `reason`.
    pub enum ReleaseReason {
        Normal = 0,
        Urgent = 1,
        UserDefined = 30,
    }
}
