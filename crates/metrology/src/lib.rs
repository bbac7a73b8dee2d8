//! `metrology`: no_std signal processing for electricity meters (placeholder until implemented).
#![no_std]
