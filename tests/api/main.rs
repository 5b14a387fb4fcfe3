//! One test binary: every test starts the server on port 0 with a fresh
//! database (a SQLite file, or a PostgreSQL database when
//! LATCHKEY_TEST_POSTGRES_URL is set) and talks HTTP to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account;
mod admin_applications;
mod admin_entities;
mod admin_users;
mod auth;
mod cli;
mod cluster;
mod concurrency;
mod engine;
mod errors;
mod helpers;
mod keys;
mod mail;
mod one;
mod openapi;
mod ops;
mod sessions;
mod smtp;
mod totp;
mod zitadel;
mod zitadel_compat;
