//! Latchkey: an OTP-driven session authentication server.
//!
//! Layers read top-down: `routes` (HTTP faces) → `services` (rules, time passed
//! in) → `db` (diesel over one `MultiConnection`). Side modules (`tokens`,
//! `passwords`, `error`) are called by services and routes only.

pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod engine;
pub mod error;
pub mod mailer;
pub mod master_key;
pub mod otp;
pub mod passwords;
pub mod routes;
pub mod services;
pub mod startup;
pub mod telemetry;
pub mod tokens;
