//! `billing`: the pure tariff engine (placeholder until implemented).
