//! The meter side of DLMS/COSEM as a sans-IO state machine: APDUs in, APDUs out.
//!
//! One [`Server`] serves one transport connection. It negotiates the association (AARQ/AARE,
//! LLS, HLS-GMAC with suite 0), enforces the access rights of the association's [`Role`],
//! answers for the association LN, security setup and invocation counter objects itself, splits
//! long GET responses into blocks, reassembles SET blocks, and reaches everything else through
//! the meter's [`ObjectAccess`].

use alloc::vec;
use alloc::vec::Vec;

use crate::apdu::{
    Aare, Aarq, ActionRequest, ActionResponse, ApplicationContext, AssociationResult,
    AttributeDescriptor, ConfirmedServiceError, Conformance, DataAccessResult, Diagnostic,
    ExceptionResponse, GetDataResult, GetRequest, GetResponse, InitiateRequest, InitiateResponse,
    InvokeId, Mechanism, MethodDescriptor, ReleaseReason, Rlre, SelectiveAccess, ServiceError,
    SetRequest, SetResponse, StateError, UserDiagnostic,
};
use crate::axdr::{BitString, Data};
use crate::cosem::{
    AccessContext, AttributeAccess, ObjectAccess, ObjectInfo, Role, class_id, logical_name,
};
use crate::error::ErrorKind;
use crate::security::{self, CounterStore, Keys, SecurityControl, SystemTitle};
use crate::{Apdu, Obis, wrapper};

/// How a client SAP authenticates. `Debug` never shows the password or keys.
#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    /// No authentication (lowest level).
    None,
    /// Low level security: a password.
    Lls { password: Vec<u8> },
    /// High level security with GMAC (mechanism 5) and suite 0 authenticated encryption of
    /// every APDU.
    HlsGmac {
        keys: Keys,
        client_system_title: SystemTitle,
    },
}

impl core::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Authentication::None => f.write_str("None"),
            Authentication::Lls { .. } => f.write_str("Lls { password: <redacted> }"),
            Authentication::HlsGmac {
                client_system_title,
                ..
            } => {
                write!(
                    f,
                    "HlsGmac {{ keys: <redacted>, client_system_title: {client_system_title:02X?} }}"
                )
            }
        }
    }
}

/// One association the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationConfig {
    pub client_sap: u16,
    pub role: Role,
    pub authentication: Authentication,
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Logical device address (wPort / HDLC upper address); wattline uses 1.
    pub logical_device: u16,
    pub system_title: SystemTitle,
    /// Largest APDU we accept; the client's own limit bounds what we send.
    pub max_receive_pdu_size: u16,
    pub conformance: Conformance,
    pub associations: Vec<AssociationConfig>,
    /// Largest SET value reassembled from blocks.
    pub max_set_bytes: usize,
}

impl ServerConfig {
    /// The wattline convention: SAP 16 public, SAP 17 reader with `lls_password`, SAP 1
    /// management with HLS-GMAC and suite 0.
    pub fn wattline(
        system_title: SystemTitle,
        lls_password: &[u8],
        keys: Keys,
        management_client_system_title: SystemTitle,
    ) -> Self {
        ServerConfig {
            logical_device: 1,
            system_title,
            max_receive_pdu_size: 1024,
            conformance: Conformance::SERVER_DEFAULT,
            associations: vec![
                AssociationConfig {
                    client_sap: 16,
                    role: Role::Public,
                    authentication: Authentication::None,
                },
                AssociationConfig {
                    client_sap: 17,
                    role: Role::Reader,
                    authentication: Authentication::Lls {
                        password: lls_password.to_vec(),
                    },
                },
                AssociationConfig {
                    client_sap: 1,
                    role: Role::Management,
                    authentication: Authentication::HlsGmac {
                        keys,
                        client_system_title: management_client_system_title,
                    },
                },
            ],
            max_set_bytes: 16 * 1024,
        }
    }
}

/// What the server needs from its surroundings for one call: the meter's objects, the
/// invocation counters (persisted by the caller) and random bytes for HLS challenges.
pub struct Env<'a> {
    pub objects: &'a mut dyn ObjectAccess,
    pub counters: &'a mut dyn CounterStore,
    /// Fills the buffer with unpredictable bytes (a CSPRNG on real meters).
    pub random: &'a mut dyn FnMut(&mut [u8]),
}

/// Bytes subtracted from the negotiated PDU size for ciphering and block headers.
const BLOCK_OVERHEAD: usize = 40;
/// Smallest client max-receive-pdu-size we accept; below it blocks would be tiny.
const MIN_PDU_SIZE: u16 = 64;
/// Length of our HLS challenge (Green Book allows 8..=64).
const CHALLENGE_LEN: usize = 16;

#[derive(Debug, Clone)]
struct Negotiated {
    index: usize,
    /// Largest APDU we may send.
    max_send: usize,
    conformance: Conformance,
    ciphered: bool,
    /// General-glo when the request came that way.
    general: bool,
}

#[derive(Debug, Clone)]
struct LongGet {
    invoke_id: InvokeId,
    data: Vec<u8>,
    sent_blocks: u32,
    chunk: usize,
}

#[derive(Debug, Clone)]
struct LongSet {
    attribute: AttributeDescriptor,
    access: Option<SelectiveAccess>,
    data: Vec<u8>,
    last_block: u32,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    /// AARE sent with StoC; only reply_to_HLS_authentication is allowed.
    AwaitingHls {
        n: Negotiated,
        stoc: Vec<u8>,
        ctos: Vec<u8>,
    },
    Associated {
        n: Negotiated,
        long_get: Option<LongGet>,
        long_set: Option<LongSet>,
    },
}

/// Counters a test or an operator can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub associations: u32,
    pub rejected_associations: u32,
    pub authentication_failures: u32,
    pub replays_rejected: u32,
    pub deciphering_errors: u32,
}

/// The sans-IO COSEM server for one connection.
#[derive(Debug, Clone)]
pub struct Server {
    config: ServerConfig,
    state: State,
    stats: ServerStats,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Server {
            config,
            state: State::Idle,
            stats: ServerStats::default(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The role of the current association, if any.
    pub fn role(&self) -> Option<Role> {
        match &self.state {
            State::Associated { n, .. } => Some(self.config.associations[n.index].role),
            _ => None,
        }
    }

    /// The transport closed: the association ends with it.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Handles one TCP-wrapper frame; returns the frame to send back, if any. Frames for another
    /// logical device are ignored, as a meter on a shared link would.
    pub fn handle_wrapper_frame(
        &mut self,
        frame: &wrapper::Frame,
        env: &mut Env<'_>,
    ) -> Option<Vec<u8>> {
        if frame.destination != self.config.logical_device {
            return None;
        }
        let reply = self.handle_apdu(frame.source, &frame.apdu, env)?;
        wrapper::frame(self.config.logical_device, frame.source, &reply).ok()
    }

    /// Handles one APDU from `client_sap`; returns the APDU to send back, if any.
    pub fn handle_apdu(
        &mut self,
        client_sap: u16,
        input: &[u8],
        env: &mut Env<'_>,
    ) -> Option<Vec<u8>> {
        let apdu = match Apdu::parse(input) {
            Ok(a) => a,
            Err(e) => {
                let service_error = match e.kind() {
                    ErrorKind::InvalidTag { .. } => ServiceError::ServiceNotSupported,
                    _ => ServiceError::OtherReason,
                };
                return Some(exception(StateError::ServiceUnknown, service_error));
            }
        };
        match apdu {
            Apdu::Aarq(aarq) => Some(self.associate(client_sap, &aarq, env)),
            Apdu::Rlrq(rlrq) => Some(self.release(rlrq.user_information.as_deref(), env)),
            other => self.service(client_sap, other, env),
        }
    }

    fn reject(
        &mut self,
        context: ApplicationContext,
        diag: UserDiagnostic,
        transient: bool,
    ) -> Vec<u8> {
        self.stats.rejected_associations += 1;
        self.state = State::Idle;
        Apdu::Aare(Aare {
            application_context: context,
            result: if transient {
                AssociationResult::RejectedTransient
            } else {
                AssociationResult::RejectedPermanent
            },
            diagnostic: Diagnostic::User(diag),
            responding_ap_title: None,
            mechanism: None,
            responding_authentication_value: None,
            user_information: None,
        })
        .to_vec()
    }

    fn associate(&mut self, client_sap: u16, aarq: &Aarq, env: &mut Env<'_>) -> Vec<u8> {
        self.state = State::Idle;
        let ctx = aarq.application_context;
        let Some(index) = self
            .config
            .associations
            .iter()
            .position(|a| a.client_sap == client_sap)
        else {
            return self.reject(ctx, UserDiagnostic::NoReasonGiven, false);
        };
        let assoc = self.config.associations[index].clone();
        let hls = matches!(assoc.authentication, Authentication::HlsGmac { .. });
        let expected_ctx = if hls {
            ApplicationContext::LogicalNameCiphering
        } else {
            ApplicationContext::LogicalNameNoCiphering
        };
        if ctx != expected_ctx {
            return self.reject(
                ctx,
                UserDiagnostic::ApplicationContextNameNotSupported,
                false,
            );
        }
        // Authentication mechanism.
        let mechanism = aarq.mechanism.unwrap_or(Mechanism::Lowest);
        match (&assoc.authentication, mechanism) {
            (Authentication::None, Mechanism::Lowest) => {}
            (Authentication::Lls { password }, Mechanism::Low) => {
                let given = aarq.calling_authentication_value.as_deref().unwrap_or(&[]);
                if !security::lls_password_matches(password, given) {
                    self.stats.authentication_failures += 1;
                    return self.reject(ctx, UserDiagnostic::AuthenticationFailure, false);
                }
            }
            (Authentication::HlsGmac { .. }, Mechanism::HighGmac) => {}
            (Authentication::None, _) | (_, Mechanism::Lowest) => {
                return self.reject(
                    ctx,
                    UserDiagnostic::AuthenticationMechanismNameRequired,
                    false,
                );
            }
            _ => {
                return self.reject(
                    ctx,
                    UserDiagnostic::AuthenticationMechanismNameNotRecognised,
                    false,
                );
            }
        }
        // User information: the InitiateRequest, ciphered for HLS.
        let Some(user) = aarq.user_information.as_deref() else {
            return self.reject(ctx, UserDiagnostic::NoReasonGiven, false);
        };
        let initiate_bytes = match &assoc.authentication {
            Authentication::HlsGmac {
                keys,
                client_system_title,
            } => {
                let title = aarq.calling_ap_title.as_deref();
                if title != Some(&client_system_title[..]) {
                    self.stats.authentication_failures += 1;
                    return self.reject(ctx, UserDiagnostic::AuthenticationFailure, false);
                }
                match self.unprotect(user, keys, client_system_title, env) {
                    Ok((plain, _)) => plain,
                    Err(_) => {
                        return self.reject(ctx, UserDiagnostic::AuthenticationFailure, false);
                    }
                }
            }
            _ => user.to_vec(),
        };
        let initiate = match InitiateRequest::parse(&initiate_bytes) {
            Ok(i) => i,
            Err(_) => return self.reject(ctx, UserDiagnostic::NoReasonGiven, false),
        };
        // Green Book 9.4.2.2.2: version 6, and a PDU size we can answer within.
        let initiate_error = if initiate.proposed_dlms_version < 6 {
            Some(1) // dlms-version-too-low
        } else if initiate.client_max_receive_pdu_size != 0
            && initiate.client_max_receive_pdu_size < MIN_PDU_SIZE
        {
            Some(3) // pdu-size-too-short
        } else if initiate.dedicated_key.is_some() {
            Some(0) // other: dedicated keys are not supported
        } else {
            None
        };
        if let Some(code) = initiate_error {
            self.stats.rejected_associations += 1;
            let err = Apdu::ConfirmedServiceError(ConfirmedServiceError {
                service: 1,
                error_kind: 6,
                error_value: code,
            });
            return Apdu::Aare(Aare {
                application_context: ctx,
                result: AssociationResult::RejectedPermanent,
                diagnostic: Diagnostic::User(UserDiagnostic::NoReasonGiven),
                responding_ap_title: None,
                mechanism: None,
                responding_authentication_value: None,
                user_information: Some(err.to_vec()),
            })
            .to_vec();
        }
        // 0 means "no limit" (Green Book 9.5): take 65535.
        let client_max = match initiate.client_max_receive_pdu_size {
            0 => u16::MAX,
            n => n,
        };
        let n = Negotiated {
            index,
            max_send: client_max
                .min(self.config.max_receive_pdu_size)
                .max(MIN_PDU_SIZE) as usize,
            conformance: initiate
                .proposed_conformance
                .intersect(self.config.conformance),
            ciphered: hls,
            general: false,
        };
        let response = InitiateResponse {
            negotiated_quality_of_service: None,
            negotiated_dlms_version: 6,
            negotiated_conformance: n.conformance,
            server_max_receive_pdu_size: self.config.max_receive_pdu_size,
            vaa_name: 0x0007,
        }
        .to_vec();
        match &assoc.authentication {
            Authentication::HlsGmac { keys, .. } => {
                let user_information = match env.counters.next_transmit().and_then(|ic| {
                    security::protect_apdu(
                        keys,
                        SecurityControl::AUTHENTICATED_ENCRYPTION,
                        &self.config.system_title,
                        ic,
                        &response,
                        false,
                    )
                }) {
                    Ok(a) => a.to_vec(),
                    Err(_) => return self.reject(ctx, UserDiagnostic::NoReasonGiven, true),
                };
                let mut stoc = vec![0u8; CHALLENGE_LEN];
                (env.random)(&mut stoc);
                let ctos = aarq
                    .calling_authentication_value
                    .clone()
                    .unwrap_or_default();
                let aare = Aare {
                    application_context: ctx,
                    result: AssociationResult::Accepted,
                    diagnostic: Diagnostic::User(UserDiagnostic::AuthenticationRequired),
                    responding_ap_title: Some(self.config.system_title.to_vec()),
                    mechanism: Some(Mechanism::HighGmac),
                    responding_authentication_value: Some(stoc.clone()),
                    user_information: Some(user_information),
                };
                self.state = State::AwaitingHls { n, stoc, ctos };
                Apdu::Aare(aare).to_vec()
            }
            _ => {
                self.stats.associations += 1;
                let aare = Aare {
                    application_context: ctx,
                    result: AssociationResult::Accepted,
                    diagnostic: Diagnostic::User(UserDiagnostic::Null),
                    responding_ap_title: None,
                    mechanism: aarq.mechanism.filter(|m| *m != Mechanism::Lowest),
                    responding_authentication_value: None,
                    user_information: Some(response),
                };
                self.state = State::Associated {
                    n,
                    long_get: None,
                    long_set: None,
                };
                Apdu::Aare(aare).to_vec()
            }
        }
    }

    fn release(&mut self, user_information: Option<&[u8]>, env: &mut Env<'_>) -> Vec<u8> {
        // A ciphered association may release with a ciphered InitiateRequest; answer it with a
        // ciphered InitiateResponse so the client can check who answered.
        let mut reply_user = None;
        let current = match &self.state {
            State::Associated { n, .. } => Some(n.clone()),
            _ => None,
        };
        if let (Some(n), Some(user)) = (current, user_information)
            && let Authentication::HlsGmac {
                keys,
                client_system_title,
            } = &self.config.associations[n.index].authentication
        {
            let keys = keys.clone();
            let title = *client_system_title;
            if self.unprotect(user, &keys, &title, env).is_ok() {
                let response = InitiateResponse {
                    negotiated_quality_of_service: None,
                    negotiated_dlms_version: 6,
                    negotiated_conformance: n.conformance,
                    server_max_receive_pdu_size: self.config.max_receive_pdu_size,
                    vaa_name: 7,
                }
                .to_vec();
                reply_user = env
                    .counters
                    .next_transmit()
                    .and_then(|ic| {
                        security::protect_apdu(
                            &keys,
                            SecurityControl::AUTHENTICATED_ENCRYPTION,
                            &self.config.system_title,
                            ic,
                            &response,
                            false,
                        )
                    })
                    .ok()
                    .map(|a| a.to_vec());
            }
        }
        self.state = State::Idle;
        Apdu::Rlre(Rlre {
            reason: Some(ReleaseReason::Normal),
            user_information: reply_user,
        })
        .to_vec()
    }

    /// Decrypts a ciphered APDU from the client and checks its counter; returns the plaintext
    /// and whether it came as general-glo.
    fn unprotect(
        &mut self,
        bytes: &[u8],
        keys: &Keys,
        client_title: &SystemTitle,
        env: &mut Env<'_>,
    ) -> crate::Result<(Vec<u8>, bool)> {
        let (sc, ic, payload, general) = match Apdu::parse(bytes)? {
            Apdu::Glo(g) => (g.security_control, g.invocation_counter, g.payload, false),
            Apdu::GeneralGlo(g) => {
                if g.system_title != client_title[..] {
                    return Err(crate::Error::new(
                        ErrorKind::AuthenticationFailed,
                        "general-glo system title",
                    ));
                }
                (g.security_control, g.invocation_counter, g.payload, true)
            }
            _ => {
                return Err(crate::Error::new(
                    ErrorKind::State("plain apdu in a ciphered association"),
                    "server",
                ));
            }
        };
        // Policy for the management association: authenticated encryption, nothing less.
        if sc != SecurityControl::AUTHENTICATED_ENCRYPTION.0 {
            self.stats.deciphering_errors += 1;
            return Err(crate::Error::new(
                ErrorKind::AuthenticationFailed,
                "security policy",
            ));
        }
        let plain = security::decrypt(keys, SecurityControl(sc), client_title, ic, &payload)
            .inspect_err(|_| {
                self.stats.deciphering_errors += 1;
            })?;
        // Only an authentic APDU may advance the counter, else a forger could burn counters.
        env.counters
            .accept_received(client_title, ic)
            .inspect_err(|_| {
                self.stats.replays_rejected += 1;
            })?;
        Ok((plain, general))
    }

    fn service(&mut self, client_sap: u16, apdu: Apdu, env: &mut Env<'_>) -> Option<Vec<u8>> {
        let n = match &self.state {
            State::Idle => {
                return Some(exception(
                    StateError::ServiceNotAllowed,
                    ServiceError::OperationNotPossible,
                ));
            }
            State::AwaitingHls { n, .. } | State::Associated { n, .. } => n.clone(),
        };
        let assoc = self.config.associations[n.index].clone();
        if assoc.client_sap != client_sap {
            return Some(exception(
                StateError::ServiceNotAllowed,
                ServiceError::OperationNotPossible,
            ));
        }
        let (plain, general) = if n.ciphered {
            let Authentication::HlsGmac {
                keys,
                client_system_title,
            } = &assoc.authentication
            else {
                return None;
            };
            match self.unprotect(&apdu.to_vec(), keys, client_system_title, env) {
                Ok((plain, general)) => match Apdu::parse(&plain) {
                    Ok(a) => (a, general),
                    Err(_) => {
                        return Some(exception(
                            StateError::ServiceUnknown,
                            ServiceError::ServiceNotSupported,
                        ));
                    }
                },
                Err(e) => {
                    let (service_error, ic) = match e.kind() {
                        ErrorKind::Replay { last_accepted, .. } => (
                            ServiceError::InvocationCounterError,
                            Some(last_accepted.saturating_add(1)),
                        ),
                        _ => (ServiceError::DecipheringError, None),
                    };
                    return Some(
                        Apdu::ExceptionResponse(ExceptionResponse {
                            state_error: StateError::ServiceNotAllowed,
                            service_error,
                            invocation_counter: ic,
                        })
                        .to_vec(),
                    );
                }
            }
        } else {
            if matches!(apdu, Apdu::Glo(_) | Apdu::GeneralGlo(_)) {
                return Some(exception(
                    StateError::ServiceNotAllowed,
                    ServiceError::OperationNotPossible,
                ));
            }
            (apdu, false)
        };
        if let State::Associated { n, .. } | State::AwaitingHls { n, .. } = &mut self.state {
            n.general = general;
        }
        let ctx = AccessContext {
            role: assoc.role,
            client_sap,
        };
        let reply = match plain {
            Apdu::GetRequest(g) if matches!(self.state, State::Associated { .. }) => {
                self.get(&ctx, g, &n, env)
            }
            Apdu::SetRequest(s) if matches!(self.state, State::Associated { .. }) => {
                self.set(&ctx, s, env)
            }
            Apdu::ActionRequest(a) => self.action(&ctx, a, env),
            _ => exception(
                StateError::ServiceNotAllowed,
                ServiceError::ServiceNotSupported,
            ),
        };
        if reply.first() == Some(&crate::apdu::tag::EXCEPTION_RESPONSE) || !n.ciphered {
            return Some(reply);
        }
        let Authentication::HlsGmac { keys, .. } = &assoc.authentication else {
            return Some(reply);
        };
        let ic = match env.counters.next_transmit() {
            Ok(ic) => ic,
            Err(_) => {
                return Some(exception(
                    StateError::ServiceNotAllowed,
                    ServiceError::OperationNotPossible,
                ));
            }
        };
        match security::protect_apdu(
            keys,
            SecurityControl::AUTHENTICATED_ENCRYPTION,
            &self.config.system_title,
            ic,
            &reply,
            general,
        ) {
            Ok(a) => Some(a.to_vec()),
            Err(_) => Some(exception(
                StateError::ServiceNotAllowed,
                ServiceError::OperationNotPossible,
            )),
        }
    }

    fn all_objects(&self, env: &Env<'_>) -> Vec<ObjectInfo> {
        let mut v = vec![
            ObjectInfo {
                class_id: class_id::ASSOCIATION_LN,
                version: 1,
                logical_name: Obis::CURRENT_ASSOCIATION,
                attribute_count: 8,
                writable_attributes: 0,
                method_count: 1,
                public: true,
            },
            ObjectInfo {
                class_id: class_id::SECURITY_SETUP,
                version: 0,
                logical_name: Obis::SECURITY_SETUP,
                attribute_count: 5,
                writable_attributes: 0,
                method_count: 0,
                public: true,
            },
            ObjectInfo {
                class_id: class_id::DATA,
                version: 0,
                logical_name: Obis::INVOCATION_COUNTER,
                attribute_count: 2,
                writable_attributes: 0,
                method_count: 0,
                public: true,
            },
        ];
        v.extend(env.objects.objects());
        v
    }

    fn find(objects: &[ObjectInfo], class: u16, obis: Obis) -> Option<&ObjectInfo> {
        objects
            .iter()
            .find(|o| o.class_id == class && o.logical_name == obis)
    }

    fn read_attribute(
        &self,
        ctx: &AccessContext,
        a: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
        n: &Negotiated,
        env: &mut Env<'_>,
    ) -> Result<Data, DataAccessResult> {
        let objects = self.all_objects(env);
        let Some(info) = Self::find(&objects, a.class_id, a.instance) else {
            return Err(DataAccessResult::ObjectUndefined);
        };
        if !matches!(
            info.attribute_access(ctx.role, a.attribute_id),
            AttributeAccess::Read | AttributeAccess::ReadWrite
        ) {
            return Err(DataAccessResult::ReadWriteDenied);
        }
        match (a.class_id, a.instance) {
            (class_id::ASSOCIATION_LN, Obis::CURRENT_ASSOCIATION) => {
                self.association_attribute(a.attribute_id, ctx, n, &objects)
            }
            (class_id::SECURITY_SETUP, Obis::SECURITY_SETUP) => {
                self.security_setup_attribute(a.attribute_id)
            }
            (class_id::DATA, Obis::INVOCATION_COUNTER) => match a.attribute_id {
                1 => Ok(logical_name(Obis::INVOCATION_COUNTER)),
                _ => Ok(Data::DoubleLongUnsigned(
                    self.management_title()
                        .and_then(|t| env.counters.last_received(&t))
                        .unwrap_or(0),
                )),
            },
            _ => env.objects.get(ctx, a, access),
        }
    }

    fn management_title(&self) -> Option<SystemTitle> {
        self.config
            .associations
            .iter()
            .find_map(|a| match &a.authentication {
                Authentication::HlsGmac {
                    client_system_title,
                    ..
                } => Some(*client_system_title),
                _ => None,
            })
    }

    fn security_setup_attribute(&self, id: i8) -> Result<Data, DataAccessResult> {
        Ok(match id {
            1 => logical_name(Obis::SECURITY_SETUP),
            // security_policy (version 0): 3 = all messages authenticated and encrypted.
            2 => Data::Enum(3),
            3 => Data::Enum(0),
            4 => Data::OctetString(
                self.management_title()
                    .map(|t| t.to_vec())
                    .unwrap_or_default(),
            ),
            5 => Data::OctetString(self.config.system_title.to_vec()),
            _ => return Err(DataAccessResult::ObjectUndefined),
        })
    }

    fn association_attribute(
        &self,
        id: i8,
        ctx: &AccessContext,
        n: &Negotiated,
        objects: &[ObjectInfo],
    ) -> Result<Data, DataAccessResult> {
        let assoc = &self.config.associations[n.index];
        Ok(match id {
            1 => logical_name(Obis::CURRENT_ASSOCIATION),
            2 => Data::Array(
                objects
                    .iter()
                    .filter(|o| ctx.role != Role::Public || o.public)
                    .map(|o| object_list_entry(o, ctx.role))
                    .collect(),
            ),
            3 => Data::Structure(vec![
                Data::Integer(assoc.client_sap as i8),
                Data::LongUnsigned(self.config.logical_device),
            ]),
            4 => {
                let id = if n.ciphered { 3 } else { 1 };
                Data::OctetString(vec![0x60, 0x85, 0x74, 0x05, 0x08, 0x01, id])
            }
            5 => Data::Structure(vec![
                Data::BitString(
                    BitString::new(24, &n.conformance.0.to_be_bytes()[1..])
                        .map_err(|_| DataAccessResult::OtherReason)?,
                ),
                Data::LongUnsigned(self.config.max_receive_pdu_size),
                Data::LongUnsigned(n.max_send as u16),
                Data::Unsigned(6),
                Data::Integer(0),
                Data::OctetString(Vec::new()),
            ]),
            6 => {
                let m = match assoc.authentication {
                    Authentication::None => 0,
                    Authentication::Lls { .. } => 1,
                    Authentication::HlsGmac { .. } => 5,
                };
                Data::OctetString(vec![0x60, 0x85, 0x74, 0x05, 0x08, 0x02, m])
            }
            // Attribute 7 is the secret: never readable.
            7 => return Err(DataAccessResult::ReadWriteDenied),
            8 => Data::Enum(2), // associated
            _ => return Err(DataAccessResult::ObjectUndefined),
        })
    }

    fn get(
        &mut self,
        ctx: &AccessContext,
        g: GetRequest,
        n: &Negotiated,
        env: &mut Env<'_>,
    ) -> Vec<u8> {
        match g {
            GetRequest::Normal {
                invoke_id,
                attribute,
                access,
            } => {
                if let State::Associated { long_get, .. } = &mut self.state {
                    *long_get = None;
                }
                let result = match self.read_attribute(ctx, &attribute, access.as_ref(), n, env) {
                    Ok(d) => GetDataResult::Data(d),
                    Err(e) => GetDataResult::Error(e),
                };
                let apdu = Apdu::GetResponse(GetResponse::Normal { invoke_id, result });
                let bytes = apdu.to_vec();
                let limit = n.max_send.saturating_sub(if n.ciphered { 32 } else { 0 });
                if bytes.len() <= limit {
                    return bytes;
                }
                let Apdu::GetResponse(GetResponse::Normal {
                    result: GetDataResult::Data(d),
                    ..
                }) = apdu
                else {
                    return bytes;
                };
                if !n.conformance.contains(Conformance::BLOCK_TRANSFER_WITH_GET) {
                    let r = GetResponse::Normal {
                        invoke_id,
                        result: GetDataResult::Error(DataAccessResult::OtherReason),
                    };
                    return Apdu::GetResponse(r).to_vec();
                }
                let mut lg = LongGet {
                    invoke_id,
                    data: d.to_vec(),
                    sent_blocks: 0,
                    chunk: n.max_send.saturating_sub(BLOCK_OVERHEAD).max(16),
                };
                let reply = next_block(&mut lg);
                if let State::Associated { long_get, .. } = &mut self.state {
                    *long_get = Some(lg);
                }
                reply
            }
            GetRequest::Next {
                invoke_id,
                block_number,
            } => {
                let State::Associated { long_get, .. } = &mut self.state else {
                    return exception(
                        StateError::ServiceNotAllowed,
                        ServiceError::OperationNotPossible,
                    );
                };
                let Some(lg) = long_get.as_mut() else {
                    return Apdu::GetResponse(GetResponse::WithDataBlock {
                        invoke_id,
                        last_block: true,
                        block_number,
                        raw: Err(DataAccessResult::NoLongGetInProgress),
                    })
                    .to_vec();
                };
                if block_number != lg.sent_blocks {
                    // The client acknowledged a block we did not send: abort, and the next
                    // transfer starts again at block 1 (Green Book 9.4.6.3).
                    *long_get = None;
                    return Apdu::GetResponse(GetResponse::WithDataBlock {
                        invoke_id,
                        last_block: true,
                        block_number,
                        raw: Err(DataAccessResult::DataBlockNumberInvalid),
                    })
                    .to_vec();
                }
                let reply = next_block(lg);
                if (lg.sent_blocks as usize) * lg.chunk >= lg.data.len() {
                    *long_get = None;
                }
                reply
            }
            GetRequest::WithList { invoke_id, items } => {
                let results = items
                    .iter()
                    .map(|i| {
                        match self.read_attribute(ctx, &i.attribute, i.access.as_ref(), n, env) {
                            Ok(d) => GetDataResult::Data(d),
                            Err(e) => GetDataResult::Error(e),
                        }
                    })
                    .collect();
                let bytes =
                    Apdu::GetResponse(GetResponse::WithList { invoke_id, results }).to_vec();
                if bytes.len() <= n.max_send.saturating_sub(if n.ciphered { 32 } else { 0 }) {
                    return bytes;
                }
                // Too long for one APDU: ask the client to read the items one by one.
                let results = items
                    .iter()
                    .map(|_| GetDataResult::Error(DataAccessResult::OtherReason))
                    .collect();
                Apdu::GetResponse(GetResponse::WithList { invoke_id, results }).to_vec()
            }
        }
    }

    fn write_attribute(
        &self,
        ctx: &AccessContext,
        a: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
        value: &Data,
        env: &mut Env<'_>,
    ) -> DataAccessResult {
        let objects = self.all_objects(env);
        let Some(info) = Self::find(&objects, a.class_id, a.instance) else {
            return DataAccessResult::ObjectUndefined;
        };
        if !matches!(
            info.attribute_access(ctx.role, a.attribute_id),
            AttributeAccess::Write | AttributeAccess::ReadWrite
        ) {
            return DataAccessResult::ReadWriteDenied;
        }
        match env.objects.set(ctx, a, access, value) {
            Ok(()) => DataAccessResult::Success,
            Err(e) => e,
        }
    }

    fn set(&mut self, ctx: &AccessContext, s: SetRequest, env: &mut Env<'_>) -> Vec<u8> {
        let max_set = self.config.max_set_bytes;
        match s {
            SetRequest::Normal {
                invoke_id,
                attribute,
                access,
                value,
            } => {
                let result = self.write_attribute(ctx, &attribute, access.as_ref(), &value, env);
                Apdu::SetResponse(SetResponse::Normal { invoke_id, result }).to_vec()
            }
            SetRequest::WithList {
                invoke_id,
                items,
                values,
            } => {
                let results = items
                    .iter()
                    .zip(&values)
                    .map(|(i, v)| {
                        self.write_attribute(ctx, &i.attribute, i.access.as_ref(), v, env)
                    })
                    .collect();
                Apdu::SetResponse(SetResponse::WithList { invoke_id, results }).to_vec()
            }
            SetRequest::WithFirstDataBlock {
                invoke_id,
                attribute,
                access,
                block,
            } => {
                if block.block_number != 1 {
                    return set_block_error(
                        invoke_id,
                        block.block_number,
                        DataAccessResult::DataBlockNumberInvalid,
                    );
                }
                let ls = LongSet {
                    attribute,
                    access,
                    data: block.raw,
                    last_block: 1,
                };
                self.continue_set(ctx, invoke_id, ls, block.last_block, max_set, env)
            }
            SetRequest::WithDataBlock { invoke_id, block } => {
                let State::Associated { long_set, .. } = &mut self.state else {
                    return exception(
                        StateError::ServiceNotAllowed,
                        ServiceError::OperationNotPossible,
                    );
                };
                let Some(mut ls) = long_set.take() else {
                    return set_block_error(
                        invoke_id,
                        block.block_number,
                        DataAccessResult::NoLongSetInProgress,
                    );
                };
                if block.block_number != ls.last_block + 1 {
                    return set_block_error(
                        invoke_id,
                        block.block_number,
                        DataAccessResult::DataBlockNumberInvalid,
                    );
                }
                ls.data.extend_from_slice(&block.raw);
                ls.last_block = block.block_number;
                self.continue_set(ctx, invoke_id, ls, block.last_block, max_set, env)
            }
        }
    }

    fn continue_set(
        &mut self,
        ctx: &AccessContext,
        invoke_id: InvokeId,
        ls: LongSet,
        last: bool,
        max_set: usize,
        env: &mut Env<'_>,
    ) -> Vec<u8> {
        if ls.data.len() > max_set {
            return set_block_error(invoke_id, ls.last_block, DataAccessResult::LongSetAborted);
        }
        if !last {
            let n = ls.last_block;
            if let State::Associated { long_set, .. } = &mut self.state {
                *long_set = Some(ls);
            }
            return Apdu::SetResponse(SetResponse::DataBlock {
                invoke_id,
                block_number: n,
            })
            .to_vec();
        }
        let result = match Data::parse(&ls.data) {
            Ok(value) => self.write_attribute(ctx, &ls.attribute, ls.access.as_ref(), &value, env),
            Err(_) => DataAccessResult::TypeUnmatched,
        };
        Apdu::SetResponse(SetResponse::LastDataBlock {
            invoke_id,
            result,
            block_number: ls.last_block,
        })
        .to_vec()
    }

    fn action(&mut self, ctx: &AccessContext, a: ActionRequest, env: &mut Env<'_>) -> Vec<u8> {
        let ActionRequest::Normal {
            invoke_id,
            method,
            parameters,
        } = a;
        let respond = |result: DataAccessResult, rv: Option<GetDataResult>| {
            Apdu::ActionResponse(ActionResponse::Normal {
                invoke_id,
                result,
                return_value: rv,
            })
            .to_vec()
        };
        // Pass 3 of HLS: reply_to_HLS_authentication on the current association.
        if method.class_id == class_id::ASSOCIATION_LN
            && method.instance == Obis::CURRENT_ASSOCIATION
            && method.method_id == 1
        {
            return match self.hls_pass3(&method, parameters.as_ref(), env) {
                Ok(f_ctos) => respond(
                    DataAccessResult::Success,
                    Some(GetDataResult::Data(Data::OctetString(f_ctos))),
                ),
                Err(r) => respond(r, None),
            };
        }
        if !matches!(self.state, State::Associated { .. }) {
            return respond(DataAccessResult::ReadWriteDenied, None);
        }
        let objects = self.all_objects(env);
        let Some(info) = Self::find(&objects, method.class_id, method.instance) else {
            return respond(DataAccessResult::ObjectUndefined, None);
        };
        if !info.method_access(ctx.role, method.method_id) {
            return respond(DataAccessResult::ReadWriteDenied, None);
        }
        match env.objects.action(ctx, &method, parameters.as_ref()) {
            Ok(rv) => respond(DataAccessResult::Success, rv.map(GetDataResult::Data)),
            Err(e) => respond(e, None),
        }
    }

    fn hls_pass3(
        &mut self,
        _m: &MethodDescriptor,
        params: Option<&Data>,
        env: &mut Env<'_>,
    ) -> Result<Vec<u8>, DataAccessResult> {
        let State::AwaitingHls { n, stoc, ctos } = &self.state else {
            return Err(DataAccessResult::ReadWriteDenied);
        };
        let n = n.clone();
        let Authentication::HlsGmac {
            keys,
            client_system_title,
        } = &self.config.associations[n.index].authentication
        else {
            return Err(DataAccessResult::ReadWriteDenied);
        };
        let response = params
            .and_then(Data::as_bytes)
            .ok_or(DataAccessResult::TypeUnmatched)?;
        // The counter inside f(StoC) is not replay-checked: StoC is fresh for this association,
        // so an old f(StoC) cannot match it.
        if security::verify_hls_gmac(keys, client_system_title, stoc, response).is_err() {
            self.stats.authentication_failures += 1;
            self.state = State::Idle;
            return Err(DataAccessResult::OtherReason);
        }
        let ic = env
            .counters
            .next_transmit()
            .map_err(|_| DataAccessResult::OtherReason)?;
        let f_ctos = security::hls_gmac_response(keys, &self.config.system_title, ic, ctos)
            .map_err(|_| DataAccessResult::OtherReason)?;
        self.stats.associations += 1;
        self.state = State::Associated {
            n,
            long_get: None,
            long_set: None,
        };
        Ok(f_ctos)
    }
}

fn exception(state_error: StateError, service_error: ServiceError) -> Vec<u8> {
    Apdu::ExceptionResponse(ExceptionResponse {
        state_error,
        service_error,
        invocation_counter: None,
    })
    .to_vec()
}

fn set_block_error(invoke_id: InvokeId, block_number: u32, result: DataAccessResult) -> Vec<u8> {
    Apdu::SetResponse(SetResponse::LastDataBlock {
        invoke_id,
        result,
        block_number,
    })
    .to_vec()
}

fn next_block(lg: &mut LongGet) -> Vec<u8> {
    let start = lg.sent_blocks as usize * lg.chunk;
    let end = (start + lg.chunk).min(lg.data.len());
    lg.sent_blocks += 1;
    Apdu::GetResponse(GetResponse::WithDataBlock {
        invoke_id: lg.invoke_id,
        last_block: end == lg.data.len(),
        block_number: lg.sent_blocks,
        raw: Ok(lg.data[start..end].to_vec()),
    })
    .to_vec()
}

/// One entry of the association's object_list (Blue Book 4.4.4, version 1 access rights).
fn object_list_entry(o: &ObjectInfo, role: Role) -> Data {
    let attributes = (1..=o.attribute_count as i8)
        .map(|id| {
            Data::Structure(vec![
                Data::Integer(id),
                Data::Enum(o.attribute_access(role, id) as u8),
                Data::Null,
            ])
        })
        .collect();
    let methods = (1..=o.method_count as i8)
        .map(|id| {
            Data::Structure(vec![
                Data::Integer(id),
                Data::Enum(o.method_access(role, id) as u8),
            ])
        })
        .collect();
    Data::Structure(vec![
        Data::LongUnsigned(o.class_id),
        Data::Unsigned(o.version),
        logical_name(o.logical_name),
        Data::Structure(vec![Data::Array(attributes), Data::Array(methods)]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apdu::MethodDescriptor;
    use crate::client::{Client, ClientAuthentication, ClientConfig, Event};
    use crate::security::MemoryCounterStore;
    use crate::{Error, ErrorKind};

    const SERVER_TITLE: SystemTitle = [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E];
    const CLIENT_TITLE: SystemTitle = [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1];
    const BLOB: Obis = Obis::new(0, 0, 96, 1, 0, 255);

    /// One data object whose value attribute is writable by the management association.
    struct Blob(Data);

    impl ObjectAccess for Blob {
        fn objects(&self) -> Vec<ObjectInfo> {
            vec![ObjectInfo {
                class_id: 1,
                version: 0,
                logical_name: BLOB,
                attribute_count: 2,
                writable_attributes: 1 << 2,
                method_count: 0,
                public: false,
            }]
        }
        fn get(
            &mut self,
            _: &AccessContext,
            a: &AttributeDescriptor,
            _: Option<&SelectiveAccess>,
        ) -> Result<Data, DataAccessResult> {
            match a.attribute_id {
                1 => Ok(logical_name(BLOB)),
                2 => Ok(self.0.clone()),
                _ => Err(DataAccessResult::ObjectUndefined),
            }
        }
        fn set(
            &mut self,
            _: &AccessContext,
            _: &AttributeDescriptor,
            _: Option<&SelectiveAccess>,
            v: &Data,
        ) -> Result<(), DataAccessResult> {
            self.0 = v.clone();
            Ok(())
        }
        fn action(
            &mut self,
            _: &AccessContext,
            _: &MethodDescriptor,
            _: Option<&Data>,
        ) -> Result<Option<Data>, DataAccessResult> {
            Err(DataAccessResult::ObjectUndefined)
        }
    }

    struct Rig {
        server: Server,
        server_counters: MemoryCounterStore,
        client: Client,
        client_counters: MemoryCounterStore,
        blob: Blob,
    }

    impl Rig {
        fn new(sap: u16, auth: ClientAuthentication, max_pdu: u16, general: bool) -> Rig {
            let mut config = ServerConfig::wattline(
                SERVER_TITLE,
                b"demo-lls",
                Keys::GREEN_BOOK_EXAMPLE,
                CLIENT_TITLE,
            );
            config.max_receive_pdu_size = max_pdu;
            let mut cc = ClientConfig::new(sap, auth);
            cc.general_ciphering = general;
            Rig {
                server: Server::new(config),
                server_counters: MemoryCounterStore::new(100),
                client: Client::new(cc),
                client_counters: MemoryCounterStore::new(1),
                blob: Blob(Data::Null),
            }
        }

        fn raw(&mut self, sap: u16, apdu: &[u8]) -> Vec<u8> {
            let mut random =
                |b: &mut [u8]| b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            let mut env = Env {
                objects: &mut self.blob,
                counters: &mut self.server_counters,
                random: &mut random,
            };
            self.server
                .handle_apdu(sap, apdu, &mut env)
                .expect("server answers")
        }

        fn run(&mut self, mut apdu: Vec<u8>) -> crate::Result<Event> {
            let sap = self.client.config().client_sap;
            loop {
                let reply = self.raw(sap, &apdu);
                match self.client.handle(&reply, &mut self.client_counters)? {
                    Event::Send(next) => apdu = next,
                    other => return Ok(other),
                }
            }
        }

        fn associate(&mut self) -> crate::Result<Event> {
            let aarq = self.client.associate(&mut self.client_counters)?;
            self.run(aarq)
        }
    }

    fn hls() -> ClientAuthentication {
        ClientAuthentication::HlsGmac {
            keys: Keys::GREEN_BOOK_EXAMPLE,
            system_title: CLIENT_TITLE,
            challenge: b"K56iVagY".to_vec(),
        }
    }

    fn blob_value() -> AttributeDescriptor {
        AttributeDescriptor {
            class_id: 1,
            instance: BLOB,
            attribute_id: 2,
        }
    }

    #[test]
    fn set_and_get_with_blocks_under_a_small_pdu_with_general_glo_ciphering() {
        let mut rig = Rig::new(1, hls(), 128, true);
        assert_eq!(rig.associate().unwrap(), Event::Associated);
        let big = Data::OctetString((0..600u16).map(|i| i as u8).collect());
        let req = rig
            .client
            .set(blob_value(), &big, &mut rig.client_counters)
            .unwrap();
        assert_eq!(
            Apdu::parse(&req).map(|a| matches!(a, Apdu::GeneralGlo(_))),
            Ok(true)
        );
        assert_eq!(rig.run(req).unwrap(), Event::Written);
        assert_eq!(rig.blob.0, big);
        let req = rig
            .client
            .get(blob_value(), None, &mut rig.client_counters)
            .unwrap();
        assert_eq!(rig.run(req).unwrap(), Event::Value(big));
    }

    #[test]
    fn set_block_out_of_order_is_refused_and_forgotten() {
        let mut rig = Rig::new(1, hls(), 128, false);
        rig.associate().unwrap();
        // Plain requests are refused in the ciphered association, so drive the blocks through
        // the client's own ciphering by sending a first block and then a skipped block number.
        let big = Data::OctetString(vec![1; 300]);
        let first = rig
            .client
            .set(blob_value(), &big, &mut rig.client_counters)
            .unwrap();
        let reply = rig.raw(1, &first);
        let Ok(Event::Send(_second)) = rig.client.handle(&reply, &mut rig.client_counters) else {
            panic!()
        };
        let skipped = Apdu::SetRequest(SetRequest::WithDataBlock {
            invoke_id: InvokeId::confirmed(1),
            block: crate::apdu::DataBlock {
                last_block: true,
                block_number: 5,
                raw: vec![0],
            },
        })
        .to_vec();
        let ic = rig.client_counters.next_transmit().unwrap();
        let protected = security::protect_apdu(
            &Keys::GREEN_BOOK_EXAMPLE,
            SecurityControl::AUTHENTICATED_ENCRYPTION,
            &CLIENT_TITLE,
            ic,
            &skipped,
            false,
        )
        .unwrap()
        .to_vec();
        let reply = rig.raw(1, &protected);
        let Apdu::Glo(g) = Apdu::parse(&reply).unwrap() else {
            panic!()
        };
        let plain = security::decrypt(
            &Keys::GREEN_BOOK_EXAMPLE,
            SecurityControl(g.security_control),
            &SERVER_TITLE,
            g.invocation_counter,
            &g.payload,
        )
        .unwrap();
        assert_eq!(
            Apdu::parse(&plain).unwrap(),
            Apdu::SetResponse(SetResponse::LastDataBlock {
                invoke_id: InvokeId::confirmed(1),
                result: DataAccessResult::DataBlockNumberInvalid,
                block_number: 5
            })
        );
        assert_eq!(rig.blob.0, Data::Null, "nothing written");
    }

    #[test]
    fn object_list_shows_rights_per_role() {
        let mut rig = Rig::new(
            17,
            ClientAuthentication::Lls {
                password: b"demo-lls".to_vec(),
            },
            1024,
            false,
        );
        rig.associate().unwrap();
        let list = AttributeDescriptor {
            class_id: 15,
            instance: Obis::CURRENT_ASSOCIATION,
            attribute_id: 2,
        };
        let req = rig
            .client
            .get(list, None, &mut rig.client_counters)
            .unwrap();
        let Event::Value(Data::Array(entries)) = rig.run(req).unwrap() else {
            panic!()
        };
        assert_eq!(
            entries.len(),
            4,
            "association, security setup, invocation counter, blob"
        );
        let blob = entries
            .iter()
            .find(|e| e.as_list().unwrap()[2] == logical_name(BLOB))
            .unwrap();
        let rights = &blob.as_list().unwrap()[3].as_list().unwrap()[0];
        let value_right = &rights.as_list().unwrap()[1].as_list().unwrap()[1];
        assert_eq!(
            *value_right,
            Data::Enum(AttributeAccess::Read as u8),
            "reader may only read"
        );
        // The reader may not write.
        let req = rig
            .client
            .set(blob_value(), &Data::Unsigned(1), &mut rig.client_counters)
            .unwrap();
        assert_eq!(
            rig.run(req).unwrap_err().kind(),
            &ErrorKind::Peer("data-access-result", 3)
        );
        // The secret (attribute 7) is never readable.
        let secret = AttributeDescriptor {
            class_id: 15,
            instance: Obis::CURRENT_ASSOCIATION,
            attribute_id: 7,
        };
        let req = rig
            .client
            .get(secret, None, &mut rig.client_counters)
            .unwrap();
        assert!(rig.run(req).is_err());

        let mut public = Rig::new(16, ClientAuthentication::None, 1024, false);
        public.associate().unwrap();
        let req = public
            .client
            .get(list, None, &mut public.client_counters)
            .unwrap();
        let Event::Value(Data::Array(entries)) = public.run(req).unwrap() else {
            panic!()
        };
        assert_eq!(entries.len(), 3, "the blob is not public");
    }

    #[test]
    fn get_with_list_answers_each_item() {
        let mut rig = Rig::new(16, ClientAuthentication::None, 1024, false);
        rig.associate().unwrap();
        let items = [
            AttributeDescriptor {
                class_id: 1,
                instance: Obis::INVOCATION_COUNTER,
                attribute_id: 2,
            },
            blob_value(),
            AttributeDescriptor {
                class_id: 64,
                instance: Obis::SECURITY_SETUP,
                attribute_id: 5,
            },
        ];
        let req = rig
            .client
            .get_list(&items, &mut rig.client_counters)
            .unwrap();
        let Event::Values(results) = rig.run(req).unwrap() else {
            panic!()
        };
        assert_eq!(
            results,
            vec![
                GetDataResult::Data(Data::DoubleLongUnsigned(0)),
                GetDataResult::Error(DataAccessResult::ReadWriteDenied),
                GetDataResult::Data(Data::OctetString(SERVER_TITLE.to_vec())),
            ]
        );
    }

    #[test]
    fn association_rejections_carry_their_reason() {
        let diag = |e: Error| match e.kind() {
            ErrorKind::Peer(_, code) => *code,
            other => panic!("{other:?}"),
        };
        // The management SAP without HLS: wrong application context.
        let mut rig = Rig::new(1, ClientAuthentication::None, 1024, false);
        assert_eq!(
            diag(rig.associate().unwrap_err()),
            u8::from(UserDiagnostic::ApplicationContextNameNotSupported)
        );
        // The reader without a password: mechanism required.
        let mut rig = Rig::new(17, ClientAuthentication::None, 1024, false);
        assert_eq!(
            diag(rig.associate().unwrap_err()),
            u8::from(UserDiagnostic::AuthenticationMechanismNameRequired)
        );
        // A PDU size too small to work with: confirmedServiceError in the user-information.
        let mut rig = Rig::new(16, ClientAuthentication::None, 1024, false);
        let mut cfg = rig.client.config().clone();
        cfg.max_receive_pdu_size = 20;
        rig.client = Client::new(cfg);
        let aarq = rig.client.associate(&mut rig.client_counters).unwrap();
        let Apdu::Aare(aare) = Apdu::parse(&rig.raw(16, &aarq)).unwrap() else {
            panic!()
        };
        assert_eq!(aare.result, AssociationResult::RejectedPermanent);
        assert_eq!(
            Apdu::parse(aare.user_information.as_deref().unwrap()).unwrap(),
            Apdu::ConfirmedServiceError(ConfirmedServiceError {
                service: 1,
                error_kind: 6,
                error_value: 3
            })
        );
        // Services before an association are refused.
        let mut rig = Rig::new(16, ClientAuthentication::None, 1024, false);
        let get = Apdu::GetRequest(GetRequest::Normal {
            invoke_id: InvokeId::confirmed(1),
            attribute: blob_value(),
            access: None,
        });
        assert_eq!(
            rig.raw(16, &get.to_vec())[0],
            crate::apdu::tag::EXCEPTION_RESPONSE
        );
        // Garbage gets an exception-response, not silence or a panic.
        assert_eq!(
            rig.raw(16, &[0xFF, 0x00])[0],
            crate::apdu::tag::EXCEPTION_RESPONSE
        );
    }

    #[test]
    fn release_ends_the_association() {
        let mut rig = Rig::new(16, ClientAuthentication::None, 1024, false);
        rig.associate().unwrap();
        assert_eq!(rig.server.role(), Some(Role::Public));
        let rlrq = rig.client.release().unwrap();
        assert_eq!(rig.run(rlrq).unwrap(), Event::Released);
        assert_eq!(rig.server.role(), None);
        let shown = alloc::format!("{:?}", rig.server.config());
        assert!(
            shown.contains("<redacted>") && !shown.contains("demo-lls"),
            "{shown}"
        );
        assert!(
            rig.client
                .get(blob_value(), None, &mut rig.client_counters)
                .is_err(),
            "client knows it is released"
        );
    }
}
