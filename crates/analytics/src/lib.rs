//! `analytics`: theft, tamper and consumption-pattern detectors (placeholder until implemented).
