//! The head-end side of DLMS/COSEM as a sans-IO state machine: each call returns the APDU to
//! send, and [`Client::handle`] turns the answer into an [`Event`] — a result, or the next APDU
//! to send (HLS pass 3, the next GET block, the next SET block).

use alloc::vec;
use alloc::vec::Vec;

use crate::apdu::{
    Aare, Aarq, ActionRequest, ActionResponse, ApplicationContext, AssociationResult,
    AttributeDescriptor, Conformance, DataAccessResult, DataBlock, Diagnostic, GetDataResult,
    GetRequest, GetResponse, InitiateRequest, InitiateResponse, InvokeId, Mechanism,
    MethodDescriptor, ReleaseReason, Rlrq, SelectiveAccess, SetRequest, SetResponse,
    UserDiagnostic,
};
use crate::axdr::Data;
use crate::error::{Error, ErrorKind, Result};
use crate::security::{self, CounterStore, Keys, SecurityControl, SystemTitle};
use crate::{Apdu, Obis};

/// How the client authenticates. `Debug` never shows the password or keys.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuthentication {
    None,
    Lls {
        password: Vec<u8>,
    },
    /// HLS-GMAC with suite 0 authenticated encryption; `challenge` is CtoS (8..=64 random bytes).
    HlsGmac {
        keys: Keys,
        system_title: SystemTitle,
        challenge: Vec<u8>,
    },
}

impl core::fmt::Debug for ClientAuthentication {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientAuthentication::None => f.write_str("None"),
            ClientAuthentication::Lls { .. } => f.write_str("Lls { password: <redacted> }"),
            ClientAuthentication::HlsGmac { system_title, .. } => {
                write!(
                    f,
                    "HlsGmac {{ keys: <redacted>, system_title: {system_title:02X?} }}"
                )
            }
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub client_sap: u16,
    pub server_logical_device: u16,
    pub authentication: ClientAuthentication,
    pub max_receive_pdu_size: u16,
    pub conformance: Conformance,
    /// Accept bytes after a GET value (some meters send them) instead of failing; they are
    /// counted in [`Client::trailing_bytes_ignored`].
    pub tolerate_trailing_bytes: bool,
    /// Use general-glo-ciphering instead of service-specific glo APDUs.
    pub general_ciphering: bool,
    /// Which sign this meter uses for the date-time deviation (a per-meter setting: meters
    /// differ, and reading with the wrong one shifts times by twice the UTC offset).
    pub clock_deviation: crate::DeviationConvention,
}

impl ClientConfig {
    /// Sensible defaults for `client_sap` with `authentication`.
    pub fn new(client_sap: u16, authentication: ClientAuthentication) -> Self {
        ClientConfig {
            client_sap,
            server_logical_device: 1,
            authentication,
            max_receive_pdu_size: 1024,
            conformance: Conformance(
                Conformance::SERVER_DEFAULT.0 | Conformance::BLOCK_TRANSFER_WITH_ACTION.0,
            ),
            tolerate_trailing_bytes: false,
            general_ciphering: false,
            clock_deviation: crate::DeviationConvention::UtcMinusLocal,
        }
    }
}

/// The outcome of handling one response.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Send this APDU and pass the answer to [`Client::handle`] again.
    Send(Vec<u8>),
    Associated,
    Value(Data),
    /// Results of a GET with-list, in request order.
    Values(Vec<GetDataResult>),
    Written,
    ActionDone(Option<Data>),
    Released,
}

#[derive(Debug, Clone)]
enum Pending {
    None,
    Aarq,
    Hls,
    Get {
        invoke_id: InvokeId,
        blocks: Vec<u8>,
        last_block: u32,
    },
    GetList,
    Set {
        invoke_id: InvokeId,
        rest: Vec<u8>,
        block: u32,
        chunk: usize,
    },
    Action,
    Release,
}

/// The sans-IO COSEM client.
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    pending: Pending,
    associated: bool,
    invoke: u8,
    server_title: Option<SystemTitle>,
    stoc: Vec<u8>,
    max_send: usize,
    negotiated: Conformance,
    trailing_bytes_ignored: usize,
}

const CTX: &str = "client";

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        Client {
            config,
            pending: Pending::None,
            associated: false,
            invoke: 0,
            server_title: None,
            stoc: Vec::new(),
            max_send: 64,
            negotiated: Conformance(0),
            trailing_bytes_ignored: 0,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn is_associated(&self) -> bool {
        self.associated
    }

    /// The server system title learnt from the AARE.
    pub fn server_system_title(&self) -> Option<SystemTitle> {
        self.server_title
    }

    /// The conformance the server agreed to.
    pub fn negotiated_conformance(&self) -> Conformance {
        self.negotiated
    }

    /// Unix seconds (UTC) of a clock time or profile time value read from this meter,
    /// interpreted with the meter's deviation convention; `None` if it is not a fully
    /// specified date-time.
    pub fn unix_time(&self, value: &Data) -> Option<i64> {
        crate::cosem::ClockAttributes::time_from_data(value)?.to_unix(self.config.clock_deviation)
    }

    /// Bytes dropped after GET values when `tolerate_trailing_bytes` is set.
    pub fn trailing_bytes_ignored(&self) -> usize {
        self.trailing_bytes_ignored
    }

    fn ciphered(&self) -> bool {
        matches!(
            self.config.authentication,
            ClientAuthentication::HlsGmac { .. }
        )
    }

    fn next_invoke(&mut self) -> InvokeId {
        self.invoke = (self.invoke + 1) & 0x0f;
        InvokeId::confirmed(self.invoke)
    }

    fn busy(&self) -> Result<()> {
        match self.pending {
            Pending::None => Ok(()),
            _ => Err(Error::new(
                ErrorKind::State("a request is already outstanding"),
                CTX,
            )),
        }
    }

    fn protect(&self, plain: Vec<u8>, counters: &mut dyn CounterStore) -> Result<Vec<u8>> {
        let ClientAuthentication::HlsGmac {
            keys, system_title, ..
        } = &self.config.authentication
        else {
            return Ok(plain);
        };
        let ic = counters.next_transmit()?;
        let general = self.config.general_ciphering;
        Ok(security::protect_apdu(
            keys,
            SecurityControl::AUTHENTICATED_ENCRYPTION,
            system_title,
            ic,
            &plain,
            general,
        )?
        .to_vec())
    }

    fn unprotect(&self, bytes: &[u8], counters: &mut dyn CounterStore) -> Result<Vec<u8>> {
        let ClientAuthentication::HlsGmac { keys, .. } = &self.config.authentication else {
            return Ok(bytes.to_vec());
        };
        let (title, sc, ic, payload) = match Apdu::parse(bytes)? {
            Apdu::Glo(g) => (
                self.server_title.ok_or(Error::new(
                    ErrorKind::State("server system title unknown"),
                    CTX,
                ))?,
                g.security_control,
                g.invocation_counter,
                g.payload,
            ),
            Apdu::GeneralGlo(g) => {
                let t: SystemTitle = g
                    .system_title
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::malformed("system title is not 8 bytes", CTX))?;
                (t, g.security_control, g.invocation_counter, g.payload)
            }
            // Exception-responses and rejections arrive in plain.
            _ => return Ok(bytes.to_vec()),
        };
        let plain = security::decrypt(keys, SecurityControl(sc), &title, ic, &payload)?;
        counters.accept_received(&title, ic)?;
        Ok(plain)
    }

    /// The AARQ that opens the association.
    pub fn associate(&mut self, counters: &mut dyn CounterStore) -> Result<Vec<u8>> {
        self.busy()?;
        let initiate = InitiateRequest {
            dedicated_key: None,
            response_allowed: true,
            proposed_quality_of_service: None,
            proposed_dlms_version: 6,
            proposed_conformance: self.config.conformance,
            client_max_receive_pdu_size: self.config.max_receive_pdu_size,
        }
        .to_vec();
        let (context, title, mechanism, value, user) = match &self.config.authentication {
            ClientAuthentication::None => (
                ApplicationContext::LogicalNameNoCiphering,
                None,
                None,
                None,
                initiate,
            ),
            ClientAuthentication::Lls { password } => (
                ApplicationContext::LogicalNameNoCiphering,
                None,
                Some(Mechanism::Low),
                Some(password.clone()),
                initiate,
            ),
            ClientAuthentication::HlsGmac {
                keys,
                system_title,
                challenge,
            } => {
                let ic = counters.next_transmit()?;
                let user = security::protect_apdu(
                    keys,
                    SecurityControl::AUTHENTICATED_ENCRYPTION,
                    system_title,
                    ic,
                    &initiate,
                    false,
                )?;
                (
                    ApplicationContext::LogicalNameCiphering,
                    Some(system_title.to_vec()),
                    Some(Mechanism::HighGmac),
                    Some(challenge.clone()),
                    user.to_vec(),
                )
            }
        };
        self.pending = Pending::Aarq;
        Ok(Apdu::Aarq(Aarq {
            application_context: context,
            calling_ap_title: title,
            mechanism,
            calling_authentication_value: value,
            user_information: Some(user),
        })
        .to_vec())
    }

    /// A GET of one attribute, optionally with selective access.
    pub fn get(
        &mut self,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
        counters: &mut dyn CounterStore,
    ) -> Result<Vec<u8>> {
        self.ready()?;
        let invoke_id = self.next_invoke();
        self.pending = Pending::Get {
            invoke_id,
            blocks: Vec::new(),
            last_block: 0,
        };
        self.protect(
            Apdu::GetRequest(GetRequest::Normal {
                invoke_id,
                attribute,
                access,
            })
            .to_vec(),
            counters,
        )
    }

    /// A GET of several attributes in one request.
    pub fn get_list(
        &mut self,
        attributes: &[AttributeDescriptor],
        counters: &mut dyn CounterStore,
    ) -> Result<Vec<u8>> {
        self.ready()?;
        let invoke_id = self.next_invoke();
        self.pending = Pending::GetList;
        let items = attributes
            .iter()
            .map(|a| crate::apdu::AttributeWithSelection {
                attribute: *a,
                access: None,
            })
            .collect();
        self.protect(
            Apdu::GetRequest(GetRequest::WithList { invoke_id, items }).to_vec(),
            counters,
        )
    }

    /// A SET; values too long for one APDU go in blocks.
    pub fn set(
        &mut self,
        attribute: AttributeDescriptor,
        value: &Data,
        counters: &mut dyn CounterStore,
    ) -> Result<Vec<u8>> {
        self.ready()?;
        let invoke_id = self.next_invoke();
        let normal = Apdu::SetRequest(SetRequest::Normal {
            invoke_id,
            attribute,
            access: None,
            value: value.clone(),
        })
        .to_vec();
        let overhead = if self.ciphered() { 40 } else { 8 };
        if normal.len() + overhead <= self.max_send {
            self.pending = Pending::Set {
                invoke_id,
                rest: Vec::new(),
                block: 0,
                chunk: 0,
            };
            return self.protect(normal, counters);
        }
        let chunk = self.max_send.saturating_sub(overhead + 24).max(16);
        let raw = value.to_vec();
        let split = chunk.min(raw.len());
        let block = DataBlock {
            last_block: split == raw.len(),
            block_number: 1,
            raw: raw[..split].to_vec(),
        };
        self.pending = Pending::Set {
            invoke_id,
            rest: raw[split..].to_vec(),
            block: 1,
            chunk,
        };
        self.protect(
            Apdu::SetRequest(SetRequest::WithFirstDataBlock {
                invoke_id,
                attribute,
                access: None,
                block,
            })
            .to_vec(),
            counters,
        )
    }

    /// An ACTION.
    pub fn action(
        &mut self,
        method: MethodDescriptor,
        parameters: Option<Data>,
        counters: &mut dyn CounterStore,
    ) -> Result<Vec<u8>> {
        self.ready()?;
        let invoke_id = self.next_invoke();
        self.pending = Pending::Action;
        self.protect(
            Apdu::ActionRequest(ActionRequest::Normal {
                invoke_id,
                method,
                parameters,
            })
            .to_vec(),
            counters,
        )
    }

    /// The RLRQ that ends the association.
    pub fn release(&mut self) -> Result<Vec<u8>> {
        self.pending = Pending::Release;
        Ok(Apdu::Rlrq(Rlrq {
            reason: Some(ReleaseReason::Normal),
            user_information: None,
        })
        .to_vec())
    }

    fn ready(&self) -> Result<()> {
        self.busy()?;
        if !self.associated {
            return Err(Error::new(ErrorKind::State("not associated"), CTX));
        }
        Ok(())
    }

    /// Handles the server's answer to the outstanding request.
    pub fn handle(&mut self, bytes: &[u8], counters: &mut dyn CounterStore) -> Result<Event> {
        let pending = core::mem::replace(&mut self.pending, Pending::None);
        match pending {
            Pending::None => Err(Error::new(ErrorKind::State("no request outstanding"), CTX)),
            Pending::Aarq => self.handle_aare(bytes, counters),
            Pending::Release => {
                self.associated = false;
                // The association ends whatever the RLRE carries, so its tag is enough: some
                // servers (gurux-dlms for Python 1.0.x) send RLREs with wrong inner lengths.
                match bytes.first() {
                    Some(&crate::apdu::tag::RLRE) => Ok(Event::Released),
                    _ => Err(Error::malformed("expected rlre", CTX)),
                }
            }
            other => {
                let plain = self.unprotect(bytes, counters)?;
                let (apdu, used) = Apdu::parse_prefix(&plain)?;
                if used != plain.len() {
                    if self.config.tolerate_trailing_bytes {
                        self.trailing_bytes_ignored += plain.len() - used;
                    } else {
                        return Err(Error::new(
                            ErrorKind::TrailingBytes {
                                count: plain.len() - used,
                            },
                            "response apdu",
                        ));
                    }
                }
                self.handle_service(other, apdu, counters)
            }
        }
    }

    fn handle_aare(&mut self, bytes: &[u8], counters: &mut dyn CounterStore) -> Result<Event> {
        let aare = match Apdu::parse(bytes)? {
            Apdu::Aare(a) => a,
            Apdu::ExceptionResponse(e) => {
                return Err(Error::new(
                    ErrorKind::Peer("exception-response", e.service_error.into()),
                    "aare",
                ));
            }
            _ => return Err(Error::malformed("expected aare", CTX)),
        };
        let Aare {
            result,
            diagnostic,
            responding_ap_title,
            responding_authentication_value,
            user_information,
            ..
        } = aare;
        if result != AssociationResult::Accepted {
            // The reason may be in the diagnostic alone: meters often omit user-information.
            let code = match diagnostic {
                Diagnostic::User(d) => u8::from(d),
                Diagnostic::Provider(d) => d,
            };
            return Err(Error::new(
                ErrorKind::Peer("association rejected, diagnostic", code),
                "aare",
            ));
        }
        if let Some(t) = &responding_ap_title {
            self.server_title = Some(
                t.as_slice()
                    .try_into()
                    .map_err(|_| Error::malformed("system title is not 8 bytes", "aare"))?,
            );
        }
        let user = user_information.ok_or(Error::malformed(
            "accepted without user-information",
            "aare",
        ))?;
        let plain = self.unprotect(&user, counters)?;
        let init = InitiateResponse::parse(&plain)?;
        self.negotiated = init.negotiated_conformance;
        self.max_send = match init.server_max_receive_pdu_size {
            0 => u16::MAX as usize,
            n => n as usize,
        };
        if diagnostic == Diagnostic::User(UserDiagnostic::AuthenticationRequired) {
            let ClientAuthentication::HlsGmac {
                keys, system_title, ..
            } = &self.config.authentication
            else {
                return Err(Error::new(
                    ErrorKind::Unsupported("server asks for hls but we use none"),
                    "aare",
                ));
            };
            self.stoc = responding_authentication_value
                .ok_or(Error::malformed("hls without StoC", "aare"))?;
            let ic = counters.next_transmit()?;
            let f_stoc = security::hls_gmac_response(keys, system_title, ic, &self.stoc)?;
            let invoke_id = self.next_invoke();
            let method = MethodDescriptor {
                class_id: 15,
                instance: Obis::CURRENT_ASSOCIATION,
                method_id: 1,
            };
            let plain = Apdu::ActionRequest(ActionRequest::Normal {
                invoke_id,
                method,
                parameters: Some(Data::OctetString(f_stoc)),
            })
            .to_vec();
            let bytes = self.protect(plain, counters)?;
            self.pending = Pending::Hls;
            return Ok(Event::Send(bytes));
        }
        self.associated = true;
        Ok(Event::Associated)
    }

    fn handle_service(
        &mut self,
        pending: Pending,
        apdu: Apdu,
        counters: &mut dyn CounterStore,
    ) -> Result<Event> {
        if let Apdu::ExceptionResponse(e) = &apdu {
            return Err(Error::new(
                ErrorKind::Peer("exception-response service-error", e.service_error.into()),
                CTX,
            ));
        }
        match (pending, apdu) {
            (
                Pending::Hls,
                Apdu::ActionResponse(ActionResponse::Normal {
                    result,
                    return_value,
                    ..
                }),
            ) => {
                if result != DataAccessResult::Success {
                    return Err(Error::new(
                        ErrorKind::AuthenticationFailed,
                        "hls pass 3 rejected by server",
                    ));
                }
                let ClientAuthentication::HlsGmac {
                    keys, challenge, ..
                } = &self.config.authentication
                else {
                    return Err(Error::new(
                        ErrorKind::State("hls reply without hls configuration"),
                        CTX,
                    ));
                };
                let Some(GetDataResult::Data(Data::OctetString(f_ctos))) = return_value else {
                    return Err(Error::malformed("no f(CtoS) in hls reply", CTX));
                };
                let title = self.server_title.ok_or(Error::new(
                    ErrorKind::State("server system title unknown"),
                    CTX,
                ))?;
                security::verify_hls_gmac(keys, &title, challenge, &f_ctos)?;
                self.associated = true;
                Ok(Event::Associated)
            }
            (
                Pending::Get {
                    invoke_id,
                    mut blocks,
                    last_block,
                },
                Apdu::GetResponse(r),
            ) => match r {
                GetResponse::Normal {
                    result: GetDataResult::Data(d),
                    ..
                } => Ok(Event::Value(d)),
                GetResponse::Normal {
                    result: GetDataResult::Error(e),
                    ..
                } => Err(access_error(e)),
                GetResponse::WithDataBlock {
                    last_block: last,
                    block_number,
                    raw,
                    ..
                } => {
                    let raw = raw.map_err(access_error)?;
                    if block_number != last_block + 1 {
                        return Err(Error::new(
                            ErrorKind::Peer("unexpected block number", block_number as u8),
                            CTX,
                        ));
                    }
                    blocks.extend_from_slice(&raw);
                    if last {
                        let (d, used) = Data::parse_prefix(&blocks)?;
                        if used != blocks.len() && !self.config.tolerate_trailing_bytes {
                            return Err(Error::new(
                                ErrorKind::TrailingBytes {
                                    count: blocks.len() - used,
                                },
                                "get blocks",
                            ));
                        }
                        return Ok(Event::Value(d));
                    }
                    let next = Apdu::GetRequest(GetRequest::Next {
                        invoke_id,
                        block_number,
                    })
                    .to_vec();
                    self.pending = Pending::Get {
                        invoke_id,
                        blocks,
                        last_block: block_number,
                    };
                    Ok(Event::Send(self.protect(next, counters)?))
                }
                GetResponse::WithList { .. } => {
                    Err(Error::malformed("with-list answer to a normal get", CTX))
                }
            },
            (Pending::GetList, Apdu::GetResponse(GetResponse::WithList { results, .. })) => {
                Ok(Event::Values(results))
            }
            (
                Pending::Set {
                    invoke_id,
                    rest,
                    block,
                    chunk,
                },
                Apdu::SetResponse(r),
            ) => match r {
                SetResponse::Normal {
                    result: DataAccessResult::Success,
                    ..
                }
                | SetResponse::LastDataBlock {
                    result: DataAccessResult::Success,
                    ..
                } => Ok(Event::Written),
                SetResponse::Normal { result, .. } | SetResponse::LastDataBlock { result, .. } => {
                    Err(access_error(result))
                }
                SetResponse::DataBlock { block_number, .. }
                    if block_number == block && !rest.is_empty() =>
                {
                    let split = chunk.min(rest.len());
                    let b = DataBlock {
                        last_block: split == rest.len(),
                        block_number: block + 1,
                        raw: rest[..split].to_vec(),
                    };
                    let next = Apdu::SetRequest(SetRequest::WithDataBlock {
                        invoke_id,
                        block: b,
                    })
                    .to_vec();
                    self.pending = Pending::Set {
                        invoke_id,
                        rest: rest[split..].to_vec(),
                        block: block + 1,
                        chunk,
                    };
                    Ok(Event::Send(self.protect(next, counters)?))
                }
                _ => Err(Error::malformed("unexpected set-response", CTX)),
            },
            (
                Pending::Action,
                Apdu::ActionResponse(ActionResponse::Normal {
                    result,
                    return_value,
                    ..
                }),
            ) => {
                if result != DataAccessResult::Success {
                    return Err(access_error(result));
                }
                match return_value {
                    None => Ok(Event::ActionDone(None)),
                    Some(GetDataResult::Data(d)) => Ok(Event::ActionDone(Some(d))),
                    Some(GetDataResult::Error(e)) => Err(access_error(e)),
                }
            }
            _ => Err(Error::malformed("response does not match the request", CTX)),
        }
    }
}

fn access_error(e: DataAccessResult) -> Error {
    Error::new(ErrorKind::Peer("data-access-result", e.into()), CTX)
}

/// A selective access by entry (selector 2): rows `from..=to` (1-based, 0 = last), all columns.
pub fn entry_selection(from: u32, to: u32) -> SelectiveAccess {
    SelectiveAccess {
        selector: 2,
        parameters: Data::Structure(vec![
            Data::DoubleLongUnsigned(from),
            Data::DoubleLongUnsigned(to),
            Data::LongUnsigned(1),
            Data::LongUnsigned(0),
        ]),
    }
}

/// A selective access by range (selector 1) on the clock column between two date-times.
pub fn range_selection(
    clock_column: &crate::cosem::CaptureObject,
    from: crate::DateTime,
    to: crate::DateTime,
) -> SelectiveAccess {
    SelectiveAccess {
        selector: 1,
        parameters: Data::Structure(vec![
            clock_column.to_data(),
            Data::OctetString(from.to_bytes().to_vec()),
            Data::OctetString(to.to_bytes().to_vec()),
            Data::Array(Vec::new()),
        ]),
    }
}
