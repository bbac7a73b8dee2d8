//! xDLMS APDUs (Green Book 9.5 / 11): one [`Apdu`] enum with `parse`/`emit` for every APDU this
//! crate speaks, byte-exact against the Green Book examples.

mod acse;
pub(crate) mod codes;

use alloc::vec::Vec;

pub use acse::{
    Aare, Aarq, Conformance, Diagnostic, InitiateRequest, InitiateResponse, Rlre, Rlrq,
};
pub use codes::{
    ApplicationContext, AssociationResult, DataAccessResult, Mechanism, ReleaseReason,
    ServiceError, StateError, UserDiagnostic,
};

use crate::axdr::Data;
use crate::cursor::{Reader, put_length};
use crate::error::{Error, ErrorKind, Result};
use crate::obis::Obis;

/// APDU tags (Green Book 9.5, `XDLMS-APDU` CHOICE).
pub mod tag {
    pub use super::acse::tag::*;
    pub const GET_REQUEST: u8 = 0xC0;
    pub const SET_REQUEST: u8 = 0xC1;
    pub const EVENT_NOTIFICATION: u8 = 0xC2;
    pub const ACTION_REQUEST: u8 = 0xC3;
    pub const GET_RESPONSE: u8 = 0xC4;
    pub const SET_RESPONSE: u8 = 0xC5;
    pub const ACTION_RESPONSE: u8 = 0xC7;
    pub const GLO_GET_REQUEST: u8 = 0xC8;
    pub const GLO_SET_REQUEST: u8 = 0xC9;
    pub const GLO_ACTION_REQUEST: u8 = 0xCB;
    pub const GLO_GET_RESPONSE: u8 = 0xCC;
    pub const GLO_SET_RESPONSE: u8 = 0xCD;
    pub const GLO_ACTION_RESPONSE: u8 = 0xCF;
    pub const EXCEPTION_RESPONSE: u8 = 0xD8;
    pub const GENERAL_GLO_CIPHERING: u8 = 0xDB;
}

/// Invoke-id (low 4 bits), service class (bit 6: confirmed) and priority (bit 7: high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InvokeId(pub u8);

impl InvokeId {
    /// Invoke-id `id`, confirmed, normal priority (what clients commonly send).
    pub const fn confirmed(id: u8) -> Self {
        InvokeId(0x40 | (id & 0x0f))
    }
    /// The invoke-id proper.
    pub const fn id(self) -> u8 {
        self.0 & 0x0f
    }
}

/// COSEM attribute descriptor: class, instance (logical name) and attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeDescriptor {
    pub class_id: u16,
    pub instance: Obis,
    pub attribute_id: i8,
}

/// COSEM method descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodDescriptor {
    pub class_id: u16,
    pub instance: Obis,
    pub method_id: i8,
}

/// Selective access: selector and its parameters (e.g. range or entry descriptor).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectiveAccess {
    pub selector: u8,
    pub parameters: Data,
}

/// An attribute with optional selective access (GET/SET with-list items).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeWithSelection {
    pub attribute: AttributeDescriptor,
    pub access: Option<SelectiveAccess>,
}

/// `Get-Data-Result`: a value or the reason there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum GetDataResult {
    Data(Data),
    Error(DataAccessResult),
}

/// A block of raw (A-XDR encoded) data in SET/GET block transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBlock {
    pub last_block: bool,
    pub block_number: u32,
    pub raw: Vec<u8>,
}

/// GET-Request variants.
#[derive(Debug, Clone, PartialEq)]
pub enum GetRequest {
    Normal {
        invoke_id: InvokeId,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
    },
    Next {
        invoke_id: InvokeId,
        block_number: u32,
    },
    WithList {
        invoke_id: InvokeId,
        items: Vec<AttributeWithSelection>,
    },
}

/// GET-Response variants.
#[derive(Debug, Clone, PartialEq)]
pub enum GetResponse {
    Normal {
        invoke_id: InvokeId,
        result: GetDataResult,
    },
    /// One block of a long response; `raw` is `Ok(bytes)` or the data-access-result that ended it.
    WithDataBlock {
        invoke_id: InvokeId,
        last_block: bool,
        block_number: u32,
        raw: core::result::Result<Vec<u8>, DataAccessResult>,
    },
    WithList {
        invoke_id: InvokeId,
        results: Vec<GetDataResult>,
    },
}

/// SET-Request variants.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRequest {
    Normal {
        invoke_id: InvokeId,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
        value: Data,
    },
    WithFirstDataBlock {
        invoke_id: InvokeId,
        attribute: AttributeDescriptor,
        access: Option<SelectiveAccess>,
        block: DataBlock,
    },
    WithDataBlock {
        invoke_id: InvokeId,
        block: DataBlock,
    },
    WithList {
        invoke_id: InvokeId,
        items: Vec<AttributeWithSelection>,
        values: Vec<Data>,
    },
}

/// SET-Response variants.
#[derive(Debug, Clone, PartialEq)]
pub enum SetResponse {
    Normal {
        invoke_id: InvokeId,
        result: DataAccessResult,
    },
    DataBlock {
        invoke_id: InvokeId,
        block_number: u32,
    },
    LastDataBlock {
        invoke_id: InvokeId,
        result: DataAccessResult,
        block_number: u32,
    },
    WithList {
        invoke_id: InvokeId,
        results: Vec<DataAccessResult>,
    },
}

/// ACTION-Request (normal).
#[derive(Debug, Clone, PartialEq)]
pub enum ActionRequest {
    Normal {
        invoke_id: InvokeId,
        method: MethodDescriptor,
        parameters: Option<Data>,
    },
}

/// ACTION-Response (normal): result and optional return value.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionResponse {
    Normal {
        invoke_id: InvokeId,
        result: DataAccessResult,
        return_value: Option<GetDataResult>,
    },
}

/// Exception-response (Green Book 9.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionResponse {
    pub state_error: StateError,
    pub service_error: ServiceError,
    /// With `InvocationCounterError`: the counter value the server expects.
    pub invocation_counter: Option<u32>,
}

/// confirmedServiceError: which service failed and the ServiceError CHOICE (tag, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmedServiceError {
    /// 1 initiateError, 2 getStatus, ... 5 read, 6 write (Green Book 9.5).
    pub service: u8,
    /// ServiceError CHOICE: 0 application-reference, 1 hardware-resource, 2 vde-state-error,
    /// 3 service, 4 definition, 5 access, 6 initiate, ...
    pub error_kind: u8,
    pub error_value: u8,
}

/// A service-specific glo-ciphered APDU: tag, then the security header and ciphered content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GloCiphered {
    /// 0x21, 0x28, 0xC8..=0xCF.
    pub tag: u8,
    pub security_control: u8,
    pub invocation_counter: u32,
    /// Ciphertext (or plaintext when only authenticated) followed by the tag if authenticated.
    pub payload: Vec<u8>,
}

/// general-glo-ciphering: the sender's system title travels with the APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneralGloCiphering {
    pub system_title: Vec<u8>,
    pub security_control: u8,
    pub invocation_counter: u32,
    pub payload: Vec<u8>,
}

/// Any APDU of this crate.
#[derive(Debug, Clone, PartialEq)]
pub enum Apdu {
    Aarq(Aarq),
    Aare(Aare),
    Rlrq(Rlrq),
    Rlre(Rlre),
    GetRequest(GetRequest),
    GetResponse(GetResponse),
    SetRequest(SetRequest),
    SetResponse(SetResponse),
    ActionRequest(ActionRequest),
    ActionResponse(ActionResponse),
    ExceptionResponse(ExceptionResponse),
    ConfirmedServiceError(ConfirmedServiceError),
    Glo(GloCiphered),
    GeneralGlo(GeneralGloCiphering),
}

const fn is_glo_tag(t: u8) -> bool {
    matches!(t, 0x21 | 0x28 | 0xC8 | 0xC9 | 0xCB | 0xCC | 0xCD | 0xCF)
}

fn read_attribute(r: &mut Reader<'_>) -> Result<AttributeDescriptor> {
    const CTX: &str = "cosem-attribute-descriptor";
    Ok(AttributeDescriptor {
        class_id: r.u16(CTX)?,
        instance: Obis(r.array(CTX)?),
        attribute_id: r.u8(CTX)? as i8,
    })
}

fn emit_attribute(out: &mut Vec<u8>, a: &AttributeDescriptor) {
    out.extend_from_slice(&a.class_id.to_be_bytes());
    out.extend_from_slice(&a.instance.0);
    out.push(a.attribute_id as u8);
}

fn read_access(r: &mut Reader<'_>) -> Result<Option<SelectiveAccess>> {
    const CTX: &str = "selective-access-descriptor";
    if !r.bool(CTX)? {
        return Ok(None);
    }
    Ok(Some(SelectiveAccess {
        selector: r.u8(CTX)?,
        parameters: Data::read(r, 1)?,
    }))
}

fn emit_access(out: &mut Vec<u8>, a: &Option<SelectiveAccess>) {
    match a {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.push(s.selector);
            s.parameters.emit(out);
        }
    }
}

fn read_get_data_result(r: &mut Reader<'_>) -> Result<GetDataResult> {
    const CTX: &str = "get-data-result";
    match r.u8(CTX)? {
        0 => Ok(GetDataResult::Data(Data::read(r, 0)?)),
        1 => Ok(GetDataResult::Error(r.u8(CTX)?.into())),
        t => Err(Error::tag(t, CTX)),
    }
}

fn emit_get_data_result(out: &mut Vec<u8>, g: &GetDataResult) {
    match g {
        GetDataResult::Data(d) => {
            out.push(0);
            d.emit(out);
        }
        GetDataResult::Error(e) => {
            out.push(1);
            out.push((*e).into());
        }
    }
}

fn read_block(r: &mut Reader<'_>) -> Result<DataBlock> {
    const CTX: &str = "datablock";
    let last_block = r.bool(CTX)?;
    let block_number = r.u32(CTX)?;
    let n = r.bounded_length(CTX)?;
    Ok(DataBlock {
        last_block,
        block_number,
        raw: r.take(n, CTX)?.to_vec(),
    })
}

fn emit_block(out: &mut Vec<u8>, b: &DataBlock) {
    out.push(b.last_block as u8);
    out.extend_from_slice(&b.block_number.to_be_bytes());
    put_length(out, b.raw.len());
    out.extend_from_slice(&b.raw);
}

/// A list count that cannot exceed the bytes left (each item takes at least `min_item` bytes).
fn read_count(r: &mut Reader<'_>, min_item: usize, ctx: &'static str) -> Result<usize> {
    let n = r.length(ctx)?;
    let need = n.saturating_mul(min_item);
    if need > r.remaining() {
        return Err(Error::truncated(need - r.remaining(), ctx));
    }
    Ok(n)
}

impl Apdu {
    /// Decodes one APDU occupying all of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Apdu> {
        let (apdu, used) = Apdu::parse_prefix(buf)?;
        if used != buf.len() {
            return Err(Error::new(
                ErrorKind::TrailingBytes {
                    count: buf.len() - used,
                },
                "apdu",
            ));
        }
        Ok(apdu)
    }

    /// Decodes one APDU from the front of `buf`; returns it and the bytes used. Some meters
    /// append bytes after a GET response value; callers that tolerate that use this.
    pub fn parse_prefix(buf: &[u8]) -> Result<(Apdu, usize)> {
        let mut r = Reader::new(buf);
        let t = r.peek("apdu")?;
        let apdu = match t {
            tag::AARQ | tag::AARE | tag::RLRQ | tag::RLRE => {
                r.u8("apdu")?;
                let n = r.bounded_length("acse apdu")?;
                let whole = &buf[..r.position() + n];
                r.take(n, "acse apdu")?;
                match t {
                    tag::AARQ => Apdu::Aarq(Aarq::parse(whole)?),
                    tag::AARE => Apdu::Aare(Aare::parse(whole)?),
                    tag::RLRQ => Apdu::Rlrq(Rlrq::parse(whole)?),
                    _ => Apdu::Rlre(Rlre::parse(whole)?),
                }
            }
            tag::GET_REQUEST => {
                r.u8("apdu")?;
                Apdu::GetRequest(Self::read_get_request(&mut r)?)
            }
            tag::GET_RESPONSE => {
                r.u8("apdu")?;
                Apdu::GetResponse(Self::read_get_response(&mut r)?)
            }
            tag::SET_REQUEST => {
                r.u8("apdu")?;
                Apdu::SetRequest(Self::read_set_request(&mut r)?)
            }
            tag::SET_RESPONSE => {
                r.u8("apdu")?;
                Apdu::SetResponse(Self::read_set_response(&mut r)?)
            }
            tag::ACTION_REQUEST => {
                r.u8("apdu")?;
                const CTX: &str = "action-request";
                match r.u8(CTX)? {
                    1 => {
                        let invoke_id = InvokeId(r.u8(CTX)?);
                        let method = MethodDescriptor {
                            class_id: r.u16(CTX)?,
                            instance: Obis(r.array(CTX)?),
                            method_id: r.u8(CTX)? as i8,
                        };
                        let parameters = if r.bool(CTX)? {
                            Some(Data::read(&mut r, 0)?)
                        } else {
                            None
                        };
                        Apdu::ActionRequest(ActionRequest::Normal {
                            invoke_id,
                            method,
                            parameters,
                        })
                    }
                    t if (2..=6).contains(&t) => {
                        return Err(Error::new(
                            ErrorKind::Unsupported("action-request other than normal"),
                            CTX,
                        ));
                    }
                    t => return Err(Error::tag(t, CTX)),
                }
            }
            tag::ACTION_RESPONSE => {
                r.u8("apdu")?;
                const CTX: &str = "action-response";
                match r.u8(CTX)? {
                    1 => {
                        let invoke_id = InvokeId(r.u8(CTX)?);
                        let result = r.u8(CTX)?.into();
                        let return_value = if r.bool(CTX)? {
                            Some(read_get_data_result(&mut r)?)
                        } else {
                            None
                        };
                        Apdu::ActionResponse(ActionResponse::Normal {
                            invoke_id,
                            result,
                            return_value,
                        })
                    }
                    t => return Err(Error::tag(t, CTX)),
                }
            }
            tag::EXCEPTION_RESPONSE => {
                r.u8("apdu")?;
                const CTX: &str = "exception-response";
                let state_error: StateError = r.u8(CTX)?.into();
                let service_error: ServiceError = r.u8(CTX)?.into();
                // Only newer servers append the expected counter; accept both forms.
                let invocation_counter = if service_error == ServiceError::InvocationCounterError
                    && r.remaining() >= 4
                {
                    Some(r.u32(CTX)?)
                } else {
                    None
                };
                Apdu::ExceptionResponse(ExceptionResponse {
                    state_error,
                    service_error,
                    invocation_counter,
                })
            }
            tag::CONFIRMED_SERVICE_ERROR => {
                r.u8("apdu")?;
                const CTX: &str = "confirmed-service-error";
                Apdu::ConfirmedServiceError(ConfirmedServiceError {
                    service: r.u8(CTX)?,
                    error_kind: r.u8(CTX)?,
                    error_value: r.u8(CTX)?,
                })
            }
            t if is_glo_tag(t) => {
                r.u8("apdu")?;
                const CTX: &str = "glo-ciphered apdu";
                let n = r.bounded_length(CTX)?;
                if n < 5 {
                    return Err(Error::new(
                        ErrorKind::LengthOutOfRange {
                            length: n,
                            max: usize::MAX,
                        },
                        CTX,
                    ));
                }
                let security_control = r.u8(CTX)?;
                let invocation_counter = r.u32(CTX)?;
                let payload = r.take(n - 5, CTX)?.to_vec();
                Apdu::Glo(GloCiphered {
                    tag: t,
                    security_control,
                    invocation_counter,
                    payload,
                })
            }
            tag::GENERAL_GLO_CIPHERING => {
                r.u8("apdu")?;
                const CTX: &str = "general-glo-ciphering";
                let n = r.bounded_length(CTX)?;
                let system_title = r.take(n, CTX)?.to_vec();
                let n = r.bounded_length(CTX)?;
                if n < 5 {
                    return Err(Error::new(
                        ErrorKind::LengthOutOfRange {
                            length: n,
                            max: usize::MAX,
                        },
                        CTX,
                    ));
                }
                let security_control = r.u8(CTX)?;
                let invocation_counter = r.u32(CTX)?;
                let payload = r.take(n - 5, CTX)?.to_vec();
                Apdu::GeneralGlo(GeneralGloCiphering {
                    system_title,
                    security_control,
                    invocation_counter,
                    payload,
                })
            }
            other => return Err(Error::tag(other, "apdu")),
        };
        Ok((apdu, r.position()))
    }

    fn read_get_request(r: &mut Reader<'_>) -> Result<GetRequest> {
        const CTX: &str = "get-request";
        let kind = r.u8(CTX)?;
        let invoke_id = InvokeId(r.u8(CTX)?);
        Ok(match kind {
            1 => GetRequest::Normal {
                invoke_id,
                attribute: read_attribute(r)?,
                access: read_access(r)?,
            },
            2 => GetRequest::Next {
                invoke_id,
                block_number: r.u32(CTX)?,
            },
            3 => {
                let n = read_count(r, 10, CTX)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(AttributeWithSelection {
                        attribute: read_attribute(r)?,
                        access: read_access(r)?,
                    });
                }
                GetRequest::WithList { invoke_id, items }
            }
            t => return Err(Error::tag(t, CTX)),
        })
    }

    fn read_get_response(r: &mut Reader<'_>) -> Result<GetResponse> {
        const CTX: &str = "get-response";
        let kind = r.u8(CTX)?;
        let invoke_id = InvokeId(r.u8(CTX)?);
        Ok(match kind {
            1 => GetResponse::Normal {
                invoke_id,
                result: read_get_data_result(r)?,
            },
            2 => {
                let last_block = r.bool(CTX)?;
                let block_number = r.u32(CTX)?;
                let raw = match r.u8(CTX)? {
                    0 => {
                        let n = r.bounded_length(CTX)?;
                        Ok(r.take(n, CTX)?.to_vec())
                    }
                    1 => Err(r.u8(CTX)?.into()),
                    t => return Err(Error::tag(t, CTX)),
                };
                GetResponse::WithDataBlock {
                    invoke_id,
                    last_block,
                    block_number,
                    raw,
                }
            }
            3 => {
                let n = read_count(r, 2, CTX)?;
                let mut results = Vec::with_capacity(n);
                for _ in 0..n {
                    results.push(read_get_data_result(r)?);
                }
                GetResponse::WithList { invoke_id, results }
            }
            t => return Err(Error::tag(t, CTX)),
        })
    }

    fn read_set_request(r: &mut Reader<'_>) -> Result<SetRequest> {
        const CTX: &str = "set-request";
        let kind = r.u8(CTX)?;
        let invoke_id = InvokeId(r.u8(CTX)?);
        Ok(match kind {
            1 => SetRequest::Normal {
                invoke_id,
                attribute: read_attribute(r)?,
                access: read_access(r)?,
                value: Data::read(r, 0)?,
            },
            2 => SetRequest::WithFirstDataBlock {
                invoke_id,
                attribute: read_attribute(r)?,
                access: read_access(r)?,
                block: read_block(r)?,
            },
            3 => SetRequest::WithDataBlock {
                invoke_id,
                block: read_block(r)?,
            },
            4 => {
                let n = read_count(r, 10, CTX)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(AttributeWithSelection {
                        attribute: read_attribute(r)?,
                        access: read_access(r)?,
                    });
                }
                let m = read_count(r, 1, CTX)?;
                if m != n {
                    return Err(Error::malformed(
                        "value count differs from attribute count",
                        CTX,
                    ));
                }
                let mut values = Vec::with_capacity(m);
                for _ in 0..m {
                    values.push(Data::read(r, 0)?);
                }
                SetRequest::WithList {
                    invoke_id,
                    items,
                    values,
                }
            }
            t => return Err(Error::tag(t, CTX)),
        })
    }

    fn read_set_response(r: &mut Reader<'_>) -> Result<SetResponse> {
        const CTX: &str = "set-response";
        let kind = r.u8(CTX)?;
        let invoke_id = InvokeId(r.u8(CTX)?);
        Ok(match kind {
            1 => SetResponse::Normal {
                invoke_id,
                result: r.u8(CTX)?.into(),
            },
            2 => SetResponse::DataBlock {
                invoke_id,
                block_number: r.u32(CTX)?,
            },
            3 => SetResponse::LastDataBlock {
                invoke_id,
                result: r.u8(CTX)?.into(),
                block_number: r.u32(CTX)?,
            },
            5 => {
                let n = read_count(r, 1, CTX)?;
                let mut results = Vec::with_capacity(n);
                for _ in 0..n {
                    results.push(r.u8(CTX)?.into());
                }
                SetResponse::WithList { invoke_id, results }
            }
            t => return Err(Error::tag(t, CTX)),
        })
    }

    /// Encodes the APDU.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Apdu::Aarq(a) => a.emit(out),
            Apdu::Aare(a) => a.emit(out),
            Apdu::Rlrq(a) => a.emit(out),
            Apdu::Rlre(a) => a.emit(out),
            Apdu::GetRequest(g) => {
                out.push(tag::GET_REQUEST);
                match g {
                    GetRequest::Normal {
                        invoke_id,
                        attribute,
                        access,
                    } => {
                        out.extend_from_slice(&[1, invoke_id.0]);
                        emit_attribute(out, attribute);
                        emit_access(out, access);
                    }
                    GetRequest::Next {
                        invoke_id,
                        block_number,
                    } => {
                        out.extend_from_slice(&[2, invoke_id.0]);
                        out.extend_from_slice(&block_number.to_be_bytes());
                    }
                    GetRequest::WithList { invoke_id, items } => {
                        out.extend_from_slice(&[3, invoke_id.0]);
                        put_length(out, items.len());
                        for i in items {
                            emit_attribute(out, &i.attribute);
                            emit_access(out, &i.access);
                        }
                    }
                }
            }
            Apdu::GetResponse(g) => {
                out.push(tag::GET_RESPONSE);
                match g {
                    GetResponse::Normal { invoke_id, result } => {
                        out.extend_from_slice(&[1, invoke_id.0]);
                        emit_get_data_result(out, result);
                    }
                    GetResponse::WithDataBlock {
                        invoke_id,
                        last_block,
                        block_number,
                        raw,
                    } => {
                        out.extend_from_slice(&[2, invoke_id.0, *last_block as u8]);
                        out.extend_from_slice(&block_number.to_be_bytes());
                        match raw {
                            Ok(bytes) => {
                                out.push(0);
                                put_length(out, bytes.len());
                                out.extend_from_slice(bytes);
                            }
                            Err(e) => out.extend_from_slice(&[1, (*e).into()]),
                        }
                    }
                    GetResponse::WithList { invoke_id, results } => {
                        out.extend_from_slice(&[3, invoke_id.0]);
                        put_length(out, results.len());
                        for r in results {
                            emit_get_data_result(out, r);
                        }
                    }
                }
            }
            Apdu::SetRequest(s) => {
                out.push(tag::SET_REQUEST);
                match s {
                    SetRequest::Normal {
                        invoke_id,
                        attribute,
                        access,
                        value,
                    } => {
                        out.extend_from_slice(&[1, invoke_id.0]);
                        emit_attribute(out, attribute);
                        emit_access(out, access);
                        value.emit(out);
                    }
                    SetRequest::WithFirstDataBlock {
                        invoke_id,
                        attribute,
                        access,
                        block,
                    } => {
                        out.extend_from_slice(&[2, invoke_id.0]);
                        emit_attribute(out, attribute);
                        emit_access(out, access);
                        emit_block(out, block);
                    }
                    SetRequest::WithDataBlock { invoke_id, block } => {
                        out.extend_from_slice(&[3, invoke_id.0]);
                        emit_block(out, block);
                    }
                    SetRequest::WithList {
                        invoke_id,
                        items,
                        values,
                    } => {
                        out.extend_from_slice(&[4, invoke_id.0]);
                        put_length(out, items.len());
                        for i in items {
                            emit_attribute(out, &i.attribute);
                            emit_access(out, &i.access);
                        }
                        put_length(out, values.len());
                        for v in values {
                            v.emit(out);
                        }
                    }
                }
            }
            Apdu::SetResponse(s) => {
                out.push(tag::SET_RESPONSE);
                match s {
                    SetResponse::Normal { invoke_id, result } => {
                        out.extend_from_slice(&[1, invoke_id.0, (*result).into()])
                    }
                    SetResponse::DataBlock {
                        invoke_id,
                        block_number,
                    } => {
                        out.extend_from_slice(&[2, invoke_id.0]);
                        out.extend_from_slice(&block_number.to_be_bytes());
                    }
                    SetResponse::LastDataBlock {
                        invoke_id,
                        result,
                        block_number,
                    } => {
                        out.extend_from_slice(&[3, invoke_id.0, (*result).into()]);
                        out.extend_from_slice(&block_number.to_be_bytes());
                    }
                    SetResponse::WithList { invoke_id, results } => {
                        out.extend_from_slice(&[5, invoke_id.0]);
                        put_length(out, results.len());
                        out.extend(results.iter().map(|r| u8::from(*r)));
                    }
                }
            }
            Apdu::ActionRequest(ActionRequest::Normal {
                invoke_id,
                method,
                parameters,
            }) => {
                out.extend_from_slice(&[tag::ACTION_REQUEST, 1, invoke_id.0]);
                out.extend_from_slice(&method.class_id.to_be_bytes());
                out.extend_from_slice(&method.instance.0);
                out.push(method.method_id as u8);
                match parameters {
                    Some(p) => {
                        out.push(1);
                        p.emit(out);
                    }
                    None => out.push(0),
                }
            }
            Apdu::ActionResponse(ActionResponse::Normal {
                invoke_id,
                result,
                return_value,
            }) => {
                out.extend_from_slice(&[tag::ACTION_RESPONSE, 1, invoke_id.0, (*result).into()]);
                match return_value {
                    Some(g) => {
                        out.push(1);
                        emit_get_data_result(out, g);
                    }
                    None => out.push(0),
                }
            }
            Apdu::ExceptionResponse(e) => {
                out.extend_from_slice(&[
                    tag::EXCEPTION_RESPONSE,
                    e.state_error.into(),
                    e.service_error.into(),
                ]);
                if let Some(ic) = e.invocation_counter {
                    out.extend_from_slice(&ic.to_be_bytes());
                }
            }
            Apdu::ConfirmedServiceError(c) => out.extend_from_slice(&[
                tag::CONFIRMED_SERVICE_ERROR,
                c.service,
                c.error_kind,
                c.error_value,
            ]),
            Apdu::Glo(g) => {
                out.push(g.tag);
                put_length(out, 5 + g.payload.len());
                out.push(g.security_control);
                out.extend_from_slice(&g.invocation_counter.to_be_bytes());
                out.extend_from_slice(&g.payload);
            }
            Apdu::GeneralGlo(g) => {
                out.push(tag::GENERAL_GLO_CIPHERING);
                put_length(out, g.system_title.len());
                out.extend_from_slice(&g.system_title);
                put_length(out, 5 + g.payload.len());
                out.push(g.security_control);
                out.extend_from_slice(&g.invocation_counter.to_be_bytes());
                out.extend_from_slice(&g.payload);
            }
        }
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }

    /// Bytes [`Apdu::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        self.to_vec().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;
    use alloc::vec;

    fn round_trip(bytes: &str) -> Apdu {
        let b = hex(bytes);
        let apdu = Apdu::parse(&b).unwrap_or_else(|e| panic!("{bytes}: {e}"));
        assert_eq!(apdu.to_vec(), b, "{apdu:?}");
        assert_eq!(apdu.buffer_len(), b.len());
        apdu
    }

    const CLOCK_TIME: AttributeDescriptor = AttributeDescriptor {
        class_id: 8,
        instance: Obis::CLOCK,
        attribute_id: 2,
    };

    #[test]
    fn get_request_normal_green_book() {
        // The plaintext of Green Book Table 40: get-request-normal for the clock time.
        let apdu = round_trip("C0 01 00 00 08 00 00 01 00 00 FF 02 00");
        assert_eq!(
            apdu,
            Apdu::GetRequest(GetRequest::Normal {
                invoke_id: InvokeId(0),
                attribute: CLOCK_TIME,
                access: None
            })
        );
    }

    #[test]
    fn get_request_with_selective_access_by_entry() {
        // Load profile buffer, selector 2 (entry descriptor): from entry 1 to 10, all columns.
        let apdu = round_trip(
            "C0 01 C1 00 07 01 00 63 01 00 FF 02 01 02 02 04 06 00 00 00 01 06 00 00 00 0A 12 00 01 12 00 00",
        );
        let Apdu::GetRequest(GetRequest::Normal {
            access: Some(a), ..
        }) = apdu
        else {
            panic!()
        };
        assert_eq!(a.selector, 2);
    }

    #[test]
    fn get_next_and_with_list() {
        round_trip("C0 02 C1 00 00 00 02");
        round_trip("C0 03 C1 02 00 03 01 00 01 08 00 FF 02 00 00 08 00 00 01 00 00 FF 02 00");
    }

    #[test]
    fn get_responses() {
        let apdu = round_trip("C4 01 C1 00 06 00 00 30 39");
        assert_eq!(
            apdu,
            Apdu::GetResponse(GetResponse::Normal {
                invoke_id: InvokeId(0xC1),
                result: GetDataResult::Data(Data::DoubleLongUnsigned(12345))
            })
        );
        round_trip("C4 01 C1 01 04");
        round_trip("C4 02 C1 00 00 00 00 01 00 05 01 02 03 04 05");
        round_trip("C4 02 C1 01 00 00 00 02 01 13");
        round_trip("C4 03 C1 02 00 11 05 01 03");
    }

    #[test]
    fn set_requests_and_responses() {
        round_trip(
            "C1 01 C1 00 08 00 00 01 00 00 FF 02 00 09 0C 07 E7 0B 0E 02 17 0D 14 00 FF C4 00",
        );
        round_trip("C1 02 C1 00 01 00 00 2A 00 00 FF 02 00 00 00 00 00 01 03 09 01 41");
        round_trip("C1 03 C1 01 00 00 00 02 02 42 43");
        round_trip("C1 04 C1 01 00 01 00 00 2A 00 00 FF 02 00 01 11 05");
        round_trip("C5 01 C1 00");
        round_trip("C5 02 C1 00 00 00 01");
        round_trip("C5 03 C1 00 00 00 00 02");
        round_trip("C5 05 C1 02 00 03");
    }

    #[test]
    fn action_request_and_response() {
        // remote_disconnect (class 70, method 1) with parameter integer 0, as Gurux sends it.
        let apdu = round_trip("C3 01 C1 00 46 00 00 60 03 0A FF 01 01 0F 00");
        assert!(
            matches!(apdu, Apdu::ActionRequest(ActionRequest::Normal { method, .. }) if method.class_id == 70)
        );
        round_trip("C7 01 C1 00 00");
        round_trip("C7 01 C1 00 01 00 09 04 01 02 03 04");
        round_trip("C7 01 C1 03 00");
    }

    #[test]
    fn exception_and_confirmed_service_error() {
        let e = round_trip("D8 01 02");
        assert_eq!(
            e,
            Apdu::ExceptionResponse(ExceptionResponse {
                state_error: StateError::ServiceNotAllowed,
                service_error: ServiceError::ServiceNotSupported,
                invocation_counter: None,
            })
        );
        round_trip("D8 01 06 00 00 01 00");
        round_trip("D8 02 07");
        // initiateError / initiate / dlms-version-too-low.
        round_trip("0E 01 06 01");
    }

    #[test]
    fn ciphered_apdus_green_book_table_40() {
        // glo-get-request, authenticated encryption (Green Book ed. 7, Table 40).
        let apdu = round_trip(
            "C8 1E 30 01 23 45 67 41 13 12 FF 93 5A 47 56 68 27 C4 67 BC 7D 82 5C 3B E4 A7 7C 3F CC 05 6B 6B",
        );
        let Apdu::Glo(g) = apdu else { panic!() };
        assert_eq!(
            (
                g.tag,
                g.security_control,
                g.invocation_counter,
                g.payload.len()
            ),
            (0xC8, 0x30, 0x0123_4567, 25)
        );
        round_trip(
            "DB 08 4D 4D 4D 00 00 BC 61 4E 12 20 01 23 45 67 41 13 12 FF 93 5A 47 56 68 27 C4 67 BC",
        );
    }

    #[test]
    fn unknown_codes_round_trip() {
        let apdu = round_trip("C4 01 C1 01 C8");
        assert_eq!(
            apdu,
            Apdu::GetResponse(GetResponse::Normal {
                invoke_id: InvokeId(0xC1),
                result: GetDataResult::Error(DataAccessResult::Unknown(0xC8))
            })
        );
        round_trip("D8 09 09");
    }

    #[test]
    fn impossible_inputs_are_errors_not_panics() {
        for bad in [
            "",
            "C0",
            "C0 01",
            "C0 01 C1 00 08",
            "C0 09 C1",
            "C4 02 C1 00 00 00 00 01 00 85 FF FF FF FF",
            "C0 03 C1 84 7F FF FF FF",
            "C8 03 30 00 00",
            "C8 10 30",
            "DB 08 4D",
            "DB 00 04 30 00 00 00",
            "C3 02 C1",
            "C5 04 C1",
            "FF",
            "60 84 FF FF FF FF",
        ] {
            assert!(Apdu::parse(&hex(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            Apdu::parse(&hex("C4 01 C1 00 11 05 00"))
                .unwrap_err()
                .kind(),
            &ErrorKind::TrailingBytes { count: 1 }
        );
        let (apdu, used) = Apdu::parse_prefix(&hex("C4 01 C1 00 11 05 00")).unwrap();
        assert_eq!(used, 6);
        assert!(matches!(apdu, Apdu::GetResponse(_)));
        let _ = vec![0u8];
    }
}
