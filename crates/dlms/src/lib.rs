//! `dlms`: DLMS/COSEM codec and association state machine (placeholder until implemented).
#![no_std]
