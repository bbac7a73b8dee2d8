//! The COSEM object model: the [`ObjectAccess`] trait a meter implements and helpers that encode
//! the interface classes wattline meters expose (Blue Book, DLMS UA 1000-1).

mod classes;
mod profile;

use alloc::vec::Vec;

pub use classes::{
    ClockAttributes, ControlState, Register, ScalerUnit, Unit, class_id,
    disconnect_control_attribute, limiter_attribute, logical_name,
};
pub use profile::{CaptureObject, ProfileGeneric, decode_buffer};

use crate::Obis;
use crate::apdu::{AttributeDescriptor, DataAccessResult, MethodDescriptor, SelectiveAccess};
use crate::axdr::Data;

/// The access level of an association (wattline convention, issue 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Client SAP 16: no security, reads only objects marked public.
    Public,
    /// Client SAP 17: LLS, reads everything.
    Reader,
    /// Client SAP 1: HLS-GMAC + suite 0; reads, writes and invokes methods.
    Management,
}

/// Who is asking: passed to every [`ObjectAccess`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessContext {
    pub role: Role,
    pub client_sap: u16,
}

/// One object as listed in the association's object list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub class_id: u16,
    pub version: u8,
    pub logical_name: Obis,
    /// Number of attributes (attribute 1 is always the logical name).
    pub attribute_count: u8,
    /// Bit `n` set: attribute `n` may be written by the management association.
    pub writable_attributes: u32,
    /// Number of methods (invocable by the management association only).
    pub method_count: u8,
    /// Readable by the public association.
    pub public: bool,
}

/// Access mode of an attribute for one association (Blue Book 4.4.4, `attribute_access_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeAccess {
    None = 0,
    Read = 1,
    Write = 2,
    ReadWrite = 3,
}

impl ObjectInfo {
    /// What `role` may do with attribute `attribute_id` of this object.
    pub fn attribute_access(&self, role: Role, attribute_id: i8) -> AttributeAccess {
        if attribute_id < 1 || attribute_id as u8 > self.attribute_count {
            return AttributeAccess::None;
        }
        let writable = attribute_id < 32 && self.writable_attributes & (1 << attribute_id) != 0;
        match role {
            Role::Public if self.public || attribute_id == 1 => AttributeAccess::Read,
            Role::Public => AttributeAccess::None,
            Role::Reader => AttributeAccess::Read,
            Role::Management if writable => AttributeAccess::ReadWrite,
            Role::Management => AttributeAccess::Read,
        }
    }

    /// Whether `role` may invoke method `method_id`: only the management association may.
    pub fn method_access(&self, role: Role, method_id: i8) -> bool {
        role == Role::Management && method_id >= 1 && method_id as u8 <= self.method_count
    }
}

/// What the meter implements so the COSEM [`Server`](crate::Server) can reach its objects. The
/// server has already checked access rights and handles the association, security setup and
/// invocation counter objects itself.
pub trait ObjectAccess {
    /// Every object the meter exposes.
    fn objects(&self) -> Vec<ObjectInfo>;

    /// Reads an attribute.
    fn get(
        &mut self,
        ctx: &AccessContext,
        attribute: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
    ) -> Result<Data, DataAccessResult>;

    /// Writes an attribute.
    fn set(
        &mut self,
        ctx: &AccessContext,
        attribute: &AttributeDescriptor,
        access: Option<&SelectiveAccess>,
        value: &Data,
    ) -> Result<(), DataAccessResult>;

    /// Invokes a method; `Ok(Some(data))` returns data to the client.
    fn action(
        &mut self,
        ctx: &AccessContext,
        method: &MethodDescriptor,
        parameters: Option<&Data>,
    ) -> Result<Option<Data>, DataAccessResult>;
}
