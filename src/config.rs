//! Settings: built-in defaults, then an optional TOML file, then `LATCHKEY_*`
//! environment variables (the environment wins). A bad value stops start-up
//! with one line naming the setting and what is wrong with it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// A secret setting's value: it prints as `SecretString(…)`, so a logged
/// or debug-printed `Settings` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(…)")
    }
}

/// Every setting: its key (the TOML key; the environment variable is
/// `LATCHKEY_` + the key in upper case), its default as text, and what it is.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("bind", "127.0.0.1:8080", "address and port to listen on"),
    (
        "data_dir",
        "./latchkey-data",
        "folder for the SQLite file and .eml mail",
    ),
    (
        "database_url",
        "<data dir>/latchkey.sqlite3",
        "SQLite path or sqlite:// URL; a postgres:// URL selects PostgreSQL",
    ),
    (
        "db_pool_size",
        "8 (SQLite) / 16 (PostgreSQL)",
        "connections in the pool",
    ),
    (
        "smtp_url",
        "unset: mail is written to <data dir>/mail/*.eml",
        "smtp://, smtps:// or smtp://…?tls=none URL of the mail relay",
    ),
    (
        "mail_from",
        "Latchkey <no-reply@localhost>",
        "sender of every mail",
    ),
    (
        "issuer",
        "http://127.0.0.1:8080",
        "`iss` claim of every token",
    ),
    (
        "public_url",
        "http://127.0.0.1:8080",
        "base URL of this server as clients see it",
    ),
    (
        "link_origins",
        "the origin of public_url",
        "comma-separated origins (scheme://host[:port]) a v2 sign-in link (urlTemplate) may point at, unless an admin token sets it",
    ),
    (
        "master_key",
        "unset: <data dir>/master.key, made at the first start",
        "64 hex digits: the key outside the database that seals the signing keys and the OTP secret (the same on every node)",
    ),
    ("log", "info", "log filter (tracing EnvFilter syntax)"),
    ("log_format", "text", "text or json"),
    ("max_body_bytes", "65536", "largest accepted request body"),
    (
        "trusted_proxies",
        "empty: the TCP peer is the client",
        "comma-separated CIDRs of reverse proxies whose Forwarded / X-Forwarded-For is believed",
    ),
    ("workers", "number of cores", "HTTP worker threads"),
    (
        "metrics_token",
        "unset: /metrics is open",
        "bearer token /metrics requires; at least 16 visible ASCII characters",
    ),
    (
        "templates_dir",
        "built-in copies of templates/",
        "folder holding email/ templates to use instead",
    ),
    (
        "outbox_max_attempts",
        "8",
        "delivery attempts before a mail is dead",
    ),
    (
        "outbox_retry_base_secs",
        "30",
        "first retry delay, doubling per attempt",
    ),
    (
        "outbox_poll_ms",
        "1000",
        "how often the delivery worker looks for due mail",
    ),
    (
        "outbox_lease_secs",
        "60",
        "how long a delivery worker's claim on a mail holds: a node that dies mid-send loses it after this, and another node sends the mail (once more, with the same Message-ID)",
    ),
    (
        "key_refresh_secs",
        "60",
        "how often a node reloads the signing keys, so that a key rotated elsewhere is used for new tokens (a token signed with a key a node does not know yet makes it reload at once)",
    ),
    (
        "async_worker",
        "true",
        "whether this node processes accepted asynchronous requests (false: it only accepts them)",
    ),
    (
        "async_poll_ms",
        "1000",
        "how often the asynchronous worker looks for due requests (it is also woken on each accept)",
    ),
    (
        "async_max_attempts",
        "5",
        "tries of an asynchronous request that fails for a transient reason before it is failed",
    ),
    (
        "async_retention_secs",
        "86400",
        "how long finished asynchronous requests stay readable before they are pruned",
    ),
    (
        "secret",
        "generated once, kept in the database",
        "at least 32 characters; keys the OTP hashes",
    ),
    (
        "session_lifetime_secs",
        "43200",
        "lifetime of a session (12 h)",
    ),
    ("otp_length", "6", "digits of an emailed code (6 to 8)"),
    ("otp_ttl_secs", "300", "how long a code stays valid"),
    ("otp_max_attempts", "5", "wrong tries that burn a code"),
    (
        "otp_resend_cooldown_secs",
        "30",
        "least time between two codes for one session",
    ),
    (
        "totp_issuer",
        "Latchkey",
        "issuer shown by authenticator apps",
    ),
    (
        "totp_skew_steps",
        "1",
        "30 s steps of clock skew accepted either side",
    ),
    (
        "expose_otp",
        "false",
        "return the code to user tokens too (for development)",
    ),
    (
        "lockout_threshold",
        "10",
        "failed password checks from one source that lock that source out of the user",
    ),
    (
        "lockout_user_threshold",
        "100",
        "failed password checks from all sources that lock the user for everyone",
    ),
    (
        "lockout_window_secs",
        "900",
        "window in which failures are counted",
    ),
    ("lockout_secs", "900", "how long a lock lasts"),
    (
        "rate_limit_per_minute",
        "60",
        "requests per client (IPv4 address or IPv6 /64) and minute on login, OTP and PIN calls; 0 is off",
    ),
    (
        "argon2_memory_kib",
        "19456",
        "argon2id memory cost (OWASP: 19 MiB)",
    ),
    ("argon2_iterations", "2", "argon2id time cost"),
    ("argon2_parallelism", "1", "argon2id lanes"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone)]
pub struct AsyncSettings {
    pub worker: bool,
    pub poll_interval_ms: u64,
    pub max_attempts: i32,
    pub retention_secs: i64,
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub max_attempts: i32,
    pub retry_base_secs: u64,
    pub poll_interval_ms: u64,
    /// How long a worker's claim on a mail holds (seconds).
    pub lease_secs: i64,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Given by LATCHKEY_SECRET; otherwise one is kept in the database.
    pub secret: Option<SecretString>,
    pub session_lifetime_secs: i64,
    pub otp_length: u32,
    pub otp_ttl_secs: i64,
    pub otp_max_attempts: i32,
    pub otp_resend_cooldown_secs: i64,
    pub expose_otp: bool,
    pub totp_issuer: String,
    /// The origins a sign-in link (`urlTemplate`) may point at, unless an
    /// admin token sets it.
    pub link_origins: Vec<url::Origin>,
    pub totp_skew_steps: u16,
    pub lockout_threshold: i32,
    /// Failures over all sources that lock the user for everyone.
    pub lockout_user_threshold: i32,
    pub lockout_window_secs: i64,
    pub lockout_secs: i64,
    pub rate_limit_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// For SQLite a file path, for PostgreSQL the URL as given.
    pub database_url: String,
    pub db_pool_size: u32,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub issuer: String,
    pub public_url: String,
    /// `LATCHKEY_MASTER_KEY` (64 hex digits); unset: the key file in the
    /// data dir.
    pub master_key: Option<crate::master_key::MasterKey>,
    pub log: String,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub trusted_proxies: TrustedProxies,
    pub workers: Option<usize>,
    /// When set, `/metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<SecretString>,
    pub templates_dir: Option<PathBuf>,
    pub outbox: OutboxSettings,
    /// How often the signing keys are reloaded (seconds).
    pub key_refresh_secs: u64,
    pub asynchronous: AsyncSettings,
    pub auth: AuthSettings,
    pub argon2: Argon2Settings,
}

/// The reverse proxies allowed to name the client of a request (see
/// `crate::routes::forwarded`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated CIDRs (`10.0.0.0/8, 2001:db8::/32`); a bare address
    /// is that one host. Empty: no proxy is trusted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let net = if item.contains('/') {
                item.parse::<IpNet>().map_err(|_| not_a_cidr(item))?
            } else {
                IpNet::from(item.parse::<IpAddr>().map_err(|_| not_a_cidr(item))?)
            };
            // `10.0.0.1/8` is most likely a typo; trusting a whole /8 by
            // accident would let its hosts name any client.
            if net.trunc() != net {
                return Err(format!(
                    "{item:?} has bits set past its prefix length; write {}",
                    net.trunc()
                ));
            }
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.0
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    }
}

fn not_a_cidr(item: &str) -> String {
    format!(
        "expected CIDRs like 10.0.0.0/8 or 2001:db8::/32, separated by commas; {item:?} is not one"
    )
}

/// One line saying which setting is wrong and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a raw value came from, for the error message.
struct RawValue {
    origin: String,
    value: String,
}

impl Settings {
    /// Defaults, then `config_file`, then the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_sources(config_file, std::env::vars())
    }

    pub fn from_sources(
        config_file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, RawValue> = BTreeMap::new();
        if let Some(path) = config_file {
            read_toml(path, &mut raw)?;
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (key, _, _) in SETTINGS {
            let var = env_name(key);
            if let Some(value) = env.get(&var) {
                raw.insert(
                    key,
                    RawValue {
                        origin: var,
                        value: value.clone(),
                    },
                );
            }
        }
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &BTreeMap<&'static str, RawValue>) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            debug_assert!(
                SETTINGS.iter().any(|(k, _, _)| *k == key),
                "setting {key} is missing from SETTINGS"
            );
            raw.get(key)
        };
        let text = |key: &str, default: &str| -> Result<String, ConfigError> {
            match get(key) {
                Some(v) if v.value.trim().is_empty() => {
                    Err(ConfigError(format!("{}: must not be empty", v.origin)))
                }
                Some(v) => Ok(v.value.trim().to_owned()),
                None => Ok(default.to_owned()),
            }
        };
        let number = |key: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => match v.value.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(ConfigError(format!(
                        "{}: expected a whole number from {min} to {max}, got {:?}",
                        v.origin, v.value
                    ))),
                },
            }
        };

        let bind_text = text("bind", "127.0.0.1:8080")?;
        let bind = bind_text.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "{}: expected an address like 127.0.0.1:8080, got {bind_text:?}",
                origin(raw, "bind")
            ))
        })?;
        let data_dir = PathBuf::from(text("data_dir", "./latchkey-data")?);

        let (backend, database_url) = match get("database_url") {
            None => (
                Backend::Sqlite,
                data_dir
                    .join("latchkey.sqlite3")
                    .to_string_lossy()
                    .into_owned(),
            ),
            Some(v) => parse_database_url(v.value.trim())
                .map_err(|why| ConfigError(format!("{}: {why}", v.origin)))?,
        };
        let default_pool = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let db_pool_size = number("db_pool_size", default_pool, 1, 1000)? as u32;

        let smtp_url = match get("smtp_url") {
            None => None,
            Some(v) if v.value.trim().is_empty() => None,
            Some(v) => {
                let url = v.value.trim();
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(ConfigError(format!(
                        "{}: expected a smtp:// or smtps:// URL, got a value starting with {:?}",
                        v.origin,
                        url.split("://").next().unwrap_or_default()
                    )));
                }
                Some(url.to_owned())
            }
        };
        let mail_from = text("mail_from", "Latchkey <no-reply@localhost>")?;
        if !mail_from.contains('@') {
            return Err(ConfigError(format!(
                "{}: expected a mailbox like `Name <user@host>`, got {mail_from:?}",
                origin(raw, "mail_from")
            )));
        }
        let issuer = text("issuer", "http://127.0.0.1:8080")?;
        let public_url = text("public_url", "http://127.0.0.1:8080")?;
        for (key, value) in [("issuer", &issuer), ("public_url", &public_url)] {
            if !(value.starts_with("http://") || value.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "{}: expected an http:// or https:// URL, got {value:?}",
                    origin(raw, key)
                )));
            }
        }
        let link_origins = {
            let (value, key_origin) = match get("link_origins") {
                Some(v) if !v.value.trim().is_empty() => (v.value.clone(), v.origin.clone()),
                _ => (public_url.clone(), origin(raw, "public_url")),
            };
            let mut origins = Vec::new();
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match url::Url::parse(item) {
                    Ok(parsed)
                        if matches!(parsed.scheme(), "http" | "https")
                            && parsed.host().is_some() =>
                    {
                        origins.push(parsed.origin())
                    }
                    _ => {
                        return Err(ConfigError(format!(
                            "{key_origin}: expected http(s) origins like https://login.example.com, got {item:?}"
                        )));
                    }
                }
            }
            origins
        };
        let totp_issuer = text("totp_issuer", "Latchkey")?;
        // The otpauth URI's label is `issuer:account`: a colon in the issuer
        // would make every authenticator enrolment fail.
        if totp_issuer.trim().is_empty() || totp_issuer.contains(':') {
            return Err(ConfigError(format!(
                "{}: must be a non-empty name without `:`, got {totp_issuer:?}",
                origin(raw, "totp_issuer")
            )));
        }
        let master_key = match get("master_key") {
            None => None,
            Some(v) if v.value.trim().is_empty() => None,
            Some(v) => Some(
                crate::master_key::MasterKey::from_hex(&v.value)
                    .map_err(|why| ConfigError(format!("{}: {why}", v.origin)))?,
            ),
        };
        let log = text("log", "info")?;
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(ConfigError(format!(
                "{}: not a valid log filter (e.g. `info` or `latchkey=debug,info`): {log:?}",
                origin(raw, "log")
            )));
        }
        let log_format = match text("log_format", "text")?.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError(format!(
                    "{}: expected `text` or `json`, got {other:?}",
                    origin(raw, "log_format")
                )));
            }
        };
        let max_body_bytes = number("max_body_bytes", 65_536, 1_024, 16 * 1024 * 1024)? as usize;
        let trusted_proxies = match get("trusted_proxies") {
            None => TrustedProxies::default(),
            Some(v) => TrustedProxies::parse(&v.value)
                .map_err(|why| ConfigError(format!("{}: {why}", v.origin)))?,
        };
        let workers = match get("workers") {
            None => None,
            Some(_) => Some(number("workers", 1, 1, 512)? as usize),
        };
        let metrics_token = match get("metrics_token") {
            None => None,
            Some(v)
                if v.value.chars().count() < 16
                    || !v.value.chars().all(|c| c.is_ascii_graphic()) =>
            {
                return Err(ConfigError(format!(
                    "{}: must be at least 16 visible ASCII characters without spaces (e.g. the output of `openssl rand -hex 32`)",
                    v.origin
                )));
            }
            Some(v) => Some(SecretString(v.value.clone())),
        };
        let templates_dir = match get("templates_dir") {
            Some(v) if !v.value.trim().is_empty() => {
                let dir = PathBuf::from(v.value.trim());
                if !dir.join("email").is_dir() {
                    return Err(ConfigError(format!(
                        "{}: {} has no email/ folder (point it at a copy of the templates/ folder)",
                        v.origin,
                        dir.display()
                    )));
                }
                Some(dir)
            }
            _ => None,
        };
        let outbox = OutboxSettings {
            max_attempts: number("outbox_max_attempts", 8, 1, 100)? as i32,
            retry_base_secs: number("outbox_retry_base_secs", 30, 1, 86_400)?,
            poll_interval_ms: number("outbox_poll_ms", 1000, 10, 60_000)?,
            lease_secs: number("outbox_lease_secs", 60, 1, 3600)? as i64,
        };
        let flag = |key: &str, default: bool| -> Result<bool, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError(format!(
                        "{}: expected true or false, got {:?}",
                        v.origin, v.value
                    ))),
                },
            }
        };
        let key_refresh_secs = number("key_refresh_secs", 60, 1, 3600)?;
        let asynchronous = AsyncSettings {
            worker: flag("async_worker", true)?,
            poll_interval_ms: number("async_poll_ms", 1000, 10, 60_000)?,
            max_attempts: number("async_max_attempts", 5, 1, 100)? as i32,
            retention_secs: number("async_retention_secs", 86_400, 60, 365 * 86_400)? as i64,
        };
        let secret = match get("secret") {
            None => None,
            Some(v) if v.value.chars().count() < 32 => {
                return Err(ConfigError(format!(
                    "{}: must be at least 32 characters (e.g. the output of `openssl rand -hex 32`)",
                    v.origin
                )));
            }
            Some(v) => Some(SecretString(v.value.clone())),
        };
        let auth = AuthSettings {
            secret,
            session_lifetime_secs: number("session_lifetime_secs", 43_200, 60, 365 * 86_400)?
                as i64,
            otp_length: number("otp_length", 6, 6, 8)? as u32,
            otp_ttl_secs: number("otp_ttl_secs", 300, 30, 86_400)? as i64,
            otp_max_attempts: number("otp_max_attempts", 5, 1, 100)? as i32,
            otp_resend_cooldown_secs: number("otp_resend_cooldown_secs", 30, 0, 3600)? as i64,
            expose_otp: flag("expose_otp", false)?,
            totp_issuer,
            link_origins,
            totp_skew_steps: number("totp_skew_steps", 1, 0, 10)? as u16,
            lockout_threshold: number("lockout_threshold", 10, 1, 1000)? as i32,
            lockout_user_threshold: number("lockout_user_threshold", 100, 1, 100_000)? as i32,
            lockout_window_secs: number("lockout_window_secs", 900, 1, 86_400)? as i64,
            lockout_secs: number("lockout_secs", 900, 1, 86_400 * 30)? as i64,
            rate_limit_per_minute: number("rate_limit_per_minute", 60, 0, 1_000_000)? as u32,
        };
        let argon2 = Argon2Settings {
            memory_kib: number("argon2_memory_kib", 19_456, 8, 4 * 1024 * 1024)? as u32,
            iterations: number("argon2_iterations", 2, 1, 100)? as u32,
            parallelism: number("argon2_parallelism", 1, 1, 64)? as u32,
        };

        Ok(Self {
            bind,
            data_dir,
            backend,
            database_url,
            db_pool_size,
            smtp_url,
            mail_from,
            issuer,
            public_url,
            master_key,
            log,
            log_format,
            max_body_bytes,
            trusted_proxies,
            workers,
            metrics_token,
            templates_dir,
            outbox,
            key_refresh_secs,
            asynchronous,
            auth,
            argon2,
        })
    }

    /// Creates the data dir if needed and makes it private (0700): it holds
    /// the SQLite file, the mail and the master key file.
    pub fn secure_data_dir(&self) -> std::io::Result<()> {
        create_private_dir(&self.data_dir)?;
        make_private_mode(&self.data_dir, 0o700)
    }

    /// Where `.eml` files go when no SMTP relay is configured.
    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("mail")
    }
}

pub fn env_name(key: &str) -> String {
    format!("LATCHKEY_{}", key.to_ascii_uppercase())
}

fn origin(raw: &BTreeMap<&'static str, RawValue>, key: &str) -> String {
    raw.get(key)
        .map(|v| v.origin.clone())
        .unwrap_or_else(|| env_name(key))
}

/// The backend is chosen here, once, from the URL's scheme: diesel's own
/// guessing would take any unreachable PostgreSQL URL for a SQLite file name.
pub fn parse_database_url(url: &str) -> Result<(Backend, String), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("a sqlite:// URL needs a file path".to_owned());
        }
        return Ok((Backend::Sqlite, path.to_owned()));
    }
    if url.contains("://") {
        return Err(format!(
            "unsupported scheme {:?}: use a file path, sqlite://PATH or postgres://…",
            url.split("://").next().unwrap_or_default()
        ));
    }
    if url == ":memory:" || url.is_empty() {
        // Each pooled connection would get its own empty database.
        return Err(
            "an in-memory SQLite database cannot be shared by a pool; give a file path".to_owned(),
        );
    }
    Ok((Backend::Sqlite, url.to_owned()))
}

fn read_toml(path: &Path, raw: &mut BTreeMap<&'static str, RawValue>) -> Result<(), ConfigError> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {name}: cannot read the file: {e}")))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError(format!("--config {name}: not valid TOML: {}", e.message())))?;
    for (key, value) in table {
        let Some((known, _, _)) = SETTINGS.iter().find(|(k, _, _)| *k == key) else {
            return Err(ConfigError(format!("{key} in {name}: unknown setting")));
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError(format!(
                    "{key} in {name}: expected a string or a number"
                )));
            }
        };
        raw.insert(
            known,
            RawValue {
                origin: format!("{key} in {name}"),
                value,
            },
        );
    }
    Ok(())
}

/// Creates `dir` (and its parents) when it does not exist, private to the
/// server's user (0700): it holds the SQLite file, mail or the master key.
/// A folder that exists is left as it is (it may be the operator's, like
/// `/tmp`); the data dir itself is tightened by [`Settings::secure_data_dir`].
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    make_private_mode(dir, 0o700)
}

/// Makes a file readable by the server's user only (0600).
pub fn make_private(file: &Path) -> std::io::Result<()> {
    make_private_mode(file, 0o600)
}

#[cfg(unix)]
fn make_private_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn make_private_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_select_sqlite_in_the_data_dir() {
        let s = Settings::from_sources(None, env(&[])).unwrap();
        assert_eq!(s.backend, Backend::Sqlite);
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert!(s.database_url.ends_with("latchkey.sqlite3"));
        assert_eq!(s.db_pool_size, 8);
        assert!(s.smtp_url.is_none());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latchkey.toml");
        std::fs::write(&file, "bind = \"127.0.0.1:9000\"\ndb_pool_size = 3\n").unwrap();
        let s = Settings::from_sources(Some(&file), env(&[("LATCHKEY_BIND", "127.0.0.1:9001")]))
            .unwrap();
        assert_eq!(s.bind.port(), 9001);
        assert_eq!(s.db_pool_size, 3);
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        let err =
            Settings::from_sources(None, env(&[("LATCHKEY_DB_POOL_SIZE", "many")])).unwrap_err();
        assert!(err.0.starts_with("LATCHKEY_DB_POOL_SIZE:"), "{}", err.0);
        let err = Settings::from_sources(None, env(&[("LATCHKEY_DATABASE_URL", "mysql://x")]))
            .unwrap_err();
        assert!(err.0.starts_with("LATCHKEY_DATABASE_URL:"), "{}", err.0);
        let err = Settings::from_sources(None, env(&[("LATCHKEY_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.0.contains("LATCHKEY_LOG_FORMAT"), "{}", err.0);
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let s = Settings::from_sources(None, env(&[])).unwrap();
        assert_eq!(s.trusted_proxies, TrustedProxies::default());
        let s = Settings::from_sources(
            None,
            env(&[(
                "LATCHKEY_TRUSTED_PROXIES",
                " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,",
            )]),
        )
        .unwrap();
        let trusted = |ip: &str| s.trusted_proxies.contains(ip.parse().unwrap());
        assert!(trusted("10.1.2.3"));
        assert!(trusted("::ffff:10.1.2.3"));
        assert!(trusted("192.0.2.7"));
        assert!(!trusted("192.0.2.8"));
        assert!(trusted("2001:db8:5::1"));
        assert!(!trusted("2001:db9::1"));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "proxy.example",
            "10.0.0.0/8;192.0.2.0/24",
        ] {
            let err = Settings::from_sources(None, env(&[("LATCHKEY_TRUSTED_PROXIES", bad)]))
                .unwrap_err();
            assert!(err.0.starts_with("LATCHKEY_TRUSTED_PROXIES:"), "{}", err.0);
        }
    }

    #[test]
    fn a_metrics_token_is_long_enough_and_sendable() {
        let s = Settings::from_sources(None, env(&[])).unwrap();
        assert_eq!(s.metrics_token, None);
        // Too short (15), blank, and values a header cannot carry as one token.
        for bad in [
            "fifteen-chars-x",
            "",
            "sixteen chars with spaces",
            "ünïcödé-tökén-16+",
        ] {
            let err =
                Settings::from_sources(None, env(&[("LATCHKEY_METRICS_TOKEN", bad)])).unwrap_err();
            assert!(
                err.0.starts_with("LATCHKEY_METRICS_TOKEN:"),
                "{bad:?}: {}",
                err.0
            );
            assert!(
                bad.is_empty() || !err.0.contains(bad),
                "the value is not echoed"
            );
        }
        let s =
            Settings::from_sources(None, env(&[("LATCHKEY_METRICS_TOKEN", "0123456789abcdef")]))
                .unwrap();
        assert_eq!(
            s.metrics_token.as_ref().map(SecretString::expose),
            Some("0123456789abcdef")
        );
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "not printed"
        );
    }

    #[test]
    fn postgres_url_selects_postgres() {
        let s =
            Settings::from_sources(None, env(&[("LATCHKEY_DATABASE_URL", "postgres://u@h/db")]))
                .unwrap();
        assert_eq!(s.backend, Backend::Postgres);
        assert_eq!(s.db_pool_size, 16);
    }
}
