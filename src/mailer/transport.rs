//! Where mail goes: an SMTP relay (lettre over tokio, pooled, with
//! timeouts) or, with no relay configured, `.eml` files in a folder.

use std::path::Path;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in the folder (kept to restrict each file written).
    Files(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
}

/// Why a send failed, in words an operator can act on.
#[derive(Debug)]
pub struct SendError {
    /// Retrying cannot help (the relay refused this mail for good).
    pub permanent: bool,
    pub message: String,
}

/// `smtp://` means STARTTLS when the relay offers it; `?tls=none` forces
/// plain text (a local relay); `?tls=required` and `smtps://` insist on TLS.
fn lettre_url(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let tls = params.iter().find_map(|p| p.strip_prefix("tls="));
    match (base.starts_with("smtp://"), tls) {
        (true, None) => params.push("tls=opportunistic"),
        (_, Some("none")) => params.retain(|p| *p != "tls=none"),
        _ => {}
    }
    if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

impl Transport {
    pub fn smtp(url: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url))
            .map_err(|e| format!("LATCHKEY_SMTP_URL: {e}"))?
            .timeout(Some(Duration::from_secs(15)))
            .pool_config(
                PoolConfig::new()
                    .max_size(8)
                    .idle_timeout(Duration::from_secs(60)),
            )
            .build();
        Ok(Self::Smtp(transport))
    }

    pub fn files(dir: &Path) -> Result<Self, String> {
        crate::config::create_private_dir(dir)
            .map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
        Ok(Self::Files(AsyncFileTransport::new(dir), dir.to_path_buf()))
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Self::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(drop)
                .map_err(describe_smtp_error),
            Self::Files(files, dir) => {
                let id = files.send(message).await.map_err(|e| SendError {
                    permanent: false,
                    message: format!("writing the .eml file failed: {e}"),
                })?;
                // A mail holds a code: only the server's user may read it.
                crate::config::make_private(&dir.join(format!("{id}.eml"))).map_err(|e| SendError {
                    permanent: false,
                    message: format!("restricting the .eml file failed: {e}"),
                })
            }
        }
    }
}

fn describe_smtp_error(err: lettre::transport::smtp::Error) -> SendError {
    let code = err.status().map(|c| c.to_string());
    let auth_refused = matches!(code.as_deref(), Some("530" | "534" | "535" | "538"));
    let message = if err.is_tls() {
        format!(
            "TLS with the relay failed ({err}); if the relay expects implicit TLS use smtps:// (usually port 465), \
             for STARTTLS use smtp:// (usually 587), for a plain local relay add ?tls=none"
        )
    } else if auth_refused {
        format!(
            "the relay refused the login ({err}); check the user and password in LATCHKEY_SMTP_URL"
        )
    } else if err.is_timeout() {
        format!("the relay did not answer in time ({err})")
    } else if err.is_permanent() {
        format!("the relay rejected the mail for good ({err})")
    } else if err.is_transient() {
        format!("the relay asked to try again later ({err})")
    } else {
        format!(
            "cannot talk to the relay ({err}); is it running and reachable, and is the port right?"
        )
    };
    SendError {
        permanent: err.is_permanent() && !auth_refused,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::{Transport, lettre_url};

    /// A mail file holds a code: the folder is 0700, each file 0600.
    #[cfg(unix)]
    #[tokio::test]
    async fn mail_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("mail");
        let transport = Transport::files(&folder).unwrap();
        let message = lettre::Message::builder()
            .from("Latchkey <no-reply@localhost>".parse().unwrap())
            .to("ann@example.com".parse().unwrap())
            .subject("code")
            .body("123456".to_owned())
            .unwrap();
        transport.send(message).await.unwrap();
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        let files: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(mode(&files[0].as_ref().unwrap().path()), 0o600);
    }

    #[test]
    fn urls_map_to_lettre_tls_modes() {
        assert_eq!(
            lettre_url("smtp://relay:587"),
            "smtp://relay:587?tls=opportunistic"
        );
        assert_eq!(lettre_url("smtp://relay:25?tls=none"), "smtp://relay:25");
        assert_eq!(
            lettre_url("smtp://u:p@relay?tls=required"),
            "smtp://u:p@relay?tls=required"
        );
        assert_eq!(lettre_url("smtps://relay"), "smtps://relay");
    }
}
