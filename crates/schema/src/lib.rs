//! `schema`: the wire format between meters and the server (placeholder until implemented).
