//! Bearer tokens: Ed25519 (EdDSA) signing keys kept in the database, JWT
//! issue and verification, and the JWKS document. The only user of
//! `jsonwebtoken`. Expiry is checked against the injected clock with one
//! second of leeway, not against the wall clock with jsonwebtoken's 60 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration as StdDuration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Clock;
use crate::db::signing_keys::{self, SigningKeyRow};
use crate::db::{Db, DbConnection};
use crate::error::ApiError;
use crate::master_key::{MasterKey, Sealer};

pub const ADMIN_SCOPE: &str = "admin";
const LEEWAY_SECS: i64 = 1;
/// Verified tokens remembered at most (the cache starts over when full).
const VERIFIED_CACHE_LIMIT: usize = 50_000;
/// An unknown `kid` reloads the keys at most this often, so garbage tokens
/// cannot turn into a database query each.
const RELOAD_THROTTLE: StdDuration = StdDuration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Space-separated scopes; admin tokens contain `admin`.
    pub scope: String,
    /// The session a session token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split_ascii_whitespace().any(|s| s == wanted)
    }

    pub fn is_admin(&self) -> bool {
        self.has_scope(ADMIN_SCOPE)
    }
}

struct LoadedKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: Vec<u8>,
}

/// Newest key first: it signs; all of them verify.
struct KeyRing {
    keys: Vec<LoadedKey>,
}

impl KeyRing {
    /// Opens each sealed key; a key that does not open means the server
    /// runs with another master key than the one that sealed it.
    fn from_rows(rows: Vec<SigningKeyRow>, sealer: &Sealer) -> Result<Self, ApiError> {
        let keys = rows
            .into_iter()
            .map(|row| {
                let seed = sealer.open(&row.kid, &row.private_key).map_err(|_| {
                    ApiError::internal(format!(
                        "signing key {} does not open with this master key",
                        row.kid
                    ))
                })?;
                let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
                    ApiError::internal(format!("signing key {} is not a 32-byte seed", row.kid))
                })?;
                let der = SigningKey::from_bytes(&seed)
                    .to_pkcs8_der()
                    .map_err(|e| ApiError::internal(format!("signing key {}: {e}", row.kid)))?;
                Ok(LoadedKey {
                    encoding: EncodingKey::from_ed_der(der.as_bytes()),
                    decoding: DecodingKey::from_ed_der(&row.public_key),
                    public_key: row.public_key,
                    kid: row.kid,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Self { keys })
    }

    fn find(&self, kid: &str) -> Option<&LoadedKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// A token whose signature was checked, and the key that checked it.
struct Verified {
    kid: String,
    public_key: Vec<u8>,
    claims: Claims,
}

pub struct TokenService {
    /// Tokens whose signature was already checked, by the token's SHA-256:
    /// an Ed25519 verification costs more than the rest of a session read.
    /// Expiry, the signing key still being in the ring (a removed key stops
    /// its tokens at once) and, for session tokens, the session are still
    /// checked on every use.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    issuer: String,
    db: Db,
    clock: Arc<dyn Clock>,
    ring: RwLock<Arc<KeyRing>>,
    last_reload: RwLock<Instant>,
    /// Opens the sealed signing keys (under the master key).
    sealer: Sealer,
}

/// The sealer of signing keys under the master key.
pub fn signing_key_sealer(master: &MasterKey) -> Sealer {
    master.sealer("signing keys v1")
}

/// Creates the first signing key if there is none, and seals keys stored
/// in the clear by an earlier version (a 32-byte seed).
pub fn ensure_signing_key(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    sealer: &Sealer,
) -> Result<(), String> {
    let rows = signing_keys::all(conn).map_err(|e| e.to_string())?;
    if rows.is_empty() {
        rotate_signing_key(conn, clock, sealer)?;
    }
    for row in rows {
        if Sealer::is_raw(&row.private_key, 32) {
            let sealed = sealer.seal(&row.kid, &row.private_key)?;
            signing_keys::set_private_key(conn, &row.kid, &sealed).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Adds a new current signing key, sealed; older keys keep verifying.
pub fn rotate_signing_key(
    conn: &mut DbConnection,
    clock: &dyn Clock,
    sealer: &Sealer,
) -> Result<String, String> {
    let seed: [u8; 32] = rand::random();
    let signing_key = SigningKey::from_bytes(&seed);
    let kid = Uuid::new_v4().simple().to_string();
    let row = SigningKeyRow {
        private_key: sealer.seal(&kid, &seed)?,
        kid,
        algorithm: "EdDSA".to_owned(),
        public_key: signing_key.verifying_key().to_bytes().to_vec(),
        created_at: clock.now().naive_utc(),
    };
    signing_keys::insert(conn, &row).map_err(|e| e.to_string())?;
    Ok(row.kid)
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::token_invalid(format!(
        "{detail} Send a valid bearer token in the Authorization header."
    ))
}

impl TokenService {
    pub async fn load(
        db: Db,
        issuer: String,
        clock: Arc<dyn Clock>,
        sealer: Sealer,
    ) -> Result<Self, ApiError> {
        let rows = db
            .run(|conn| Ok::<_, ApiError>(signing_keys::all(conn)?))
            .await?;
        Ok(Self {
            ring: RwLock::new(Arc::new(KeyRing::from_rows(rows, &sealer)?)),
            sealer,
            verified: Mutex::new(HashMap::new()),
            issuer,
            db,
            clock,
            // The first unknown kid may reload at once.
            last_reload: RwLock::new(
                Instant::now()
                    .checked_sub(RELOAD_THROTTLE)
                    .unwrap_or_else(Instant::now),
            ),
        })
    }

    fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the keys (after `rotate-key` or on another instance).
    pub async fn reload(&self) -> Result<(), ApiError> {
        let rows = self
            .db
            .run(|conn| Ok::<_, ApiError>(signing_keys::all(conn)?))
            .await?;
        let ring = Arc::new(KeyRing::from_rows(rows, &self.sealer)?);
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        match self.last_reload.write() {
            Ok(mut at) => *at = Instant::now(),
            Err(poisoned) => *poisoned.into_inner() = Instant::now(),
        }
        Ok(())
    }

    fn may_reload(&self) -> bool {
        match self.last_reload.read() {
            Ok(at) => at.elapsed() >= RELOAD_THROTTLE,
            Err(_) => true,
        }
    }

    /// Signs a token with the current key.
    pub fn issue(
        &self,
        sub: &str,
        scope: &str,
        ttl: Duration,
        sid: Option<&str>,
    ) -> Result<(String, Claims), ApiError> {
        let ring = self.ring();
        let key = ring
            .keys
            .first()
            .ok_or_else(|| ApiError::internal("no signing key loaded"))?;
        let now = self.clock.now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            iat: now,
            exp: now + ttl.num_seconds(),
            jti: Uuid::new_v4().to_string(),
            scope: scope.to_owned(),
            sid: sid.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| ApiError::internal(format!("signing a token: {e}")))?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, issuer and expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A remembered verification counts only while its key is still in
        // the ring, unchanged; otherwise the token is verified afresh.
        let ring = self.ring();
        let known = self
            .verified
            .lock()
            .map(|mut cache| match cache.get(&fingerprint) {
                Some(entry)
                    if ring
                        .find(&entry.kid)
                        .is_some_and(|key| key.public_key == entry.public_key) =>
                {
                    Some(entry.claims.clone())
                }
                Some(_) => {
                    cache.remove(&fingerprint);
                    None
                }
                None => None,
            })
            .unwrap_or(None);
        let claims = match known {
            Some(claims) => claims,
            None => {
                let verified = self.verify_signature(token).await?;
                let claims = verified.claims.clone();
                if let Ok(mut cache) = self.verified.lock() {
                    if cache.len() >= VERIFIED_CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(fingerprint, verified);
                }
                claims
            }
        };
        if self.clock.now().timestamp() > claims.exp + LEEWAY_SECS {
            return Err(unauthorized("The bearer token has expired."));
        }
        Ok(claims)
    }

    /// Signature, algorithm and issuer (not expiry, which changes with time).
    async fn verify_signature(&self, token: &str) -> Result<Verified, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("The bearer token is malformed."))?;
        // Only EdDSA: refuses `none` and HS256 signed with a public key.
        if header.alg != Algorithm::EdDSA {
            return Err(unauthorized(
                "The bearer token uses an unsupported algorithm.",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("The bearer token has no key id."))?;
        let mut ring = self.ring();
        if ring.find(&kid).is_none() && self.may_reload() {
            self.reload().await?;
            ring = self.ring();
        }
        let key = ring
            .find(&kid)
            .ok_or_else(|| unauthorized("The bearer token is signed with an unknown key."))?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|_| unauthorized("The bearer token's signature or claims are invalid."))?
            .claims;
        if claims.iss != self.issuer {
            return Err(unauthorized(
                "The bearer token was issued by another issuer.",
            ));
        }
        Ok(Verified {
            kid: key.kid.clone(),
            public_key: key.public_key.clone(),
            claims,
        })
    }

    /// The public keys as a JWK set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .ring()
            .keys
            .iter()
            .map(|key| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": key.kid,
                    "x": URL_SAFE_NO_PAD.encode(&key.public_key),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}
