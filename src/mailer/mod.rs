//! Mail: templates, the durable outbox and its delivery worker, and the
//! transports. A mail is an outbox row written in the same transaction as
//! the change that causes it; the worker delivers it afterwards, retrying
//! with backoff, so a relay outage delays mail but never loses it.

pub mod outbox;
pub mod templates;
pub mod transport;

use std::sync::Arc;

use chrono::NaiveDateTime;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use self::templates::{Rendered, TemplateError, Templates};
use self::transport::Transport;
use crate::config::Settings;
use crate::db::DbConnection;
use crate::db::outbox::{self as rows, OutboxRow};
use crate::error::ApiError;
use crate::otp::sealed::SecretBox;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    LoginOtp,
    SecurityNotice,
}

impl MailKind {
    pub const ALL: &'static [MailKind] = &[MailKind::LoginOtp, MailKind::SecurityNotice];

    pub fn name(self) -> &'static str {
        match self {
            Self::LoginOtp => "login_otp",
            Self::SecurityNotice => "security_notice",
        }
    }

    /// The kind an outbox row names.
    fn of_row(row: &OutboxRow) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.name() == row.kind)
            .ok_or_else(|| format!("outbox row of unknown kind {}", row.kind))
    }

    /// Whether the mail holds a secret that is not kept after sending, so
    /// it cannot be rendered again.
    pub fn carries_secret(self) -> bool {
        matches!(self, Self::LoginOtp)
    }
}

/// The template variables that are not secret (kept in the outbox row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MailContext {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_minutes: Option<i64>,
    /// A sign-in link; `{{.Code}}` in it stands for the code, which is put
    /// in only when the mail is rendered (the context is kept in the clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// For security notices: totp_confirmed, totp_removed or recovery_codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// One mail to queue.
pub struct OutgoingMail<'a> {
    pub kind: MailKind,
    pub language: &'a str,
    pub recipient: &'a str,
    pub context: MailContext,
    /// The one-time code: stored sealed until the mail is delivered.
    pub code: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error("{0}")]
    Transport(String),
    #[error("LATCHKEY_MAIL_FROM: {0}")]
    From(String),
}

pub struct Mailer {
    templates: Templates,
    transport: Transport,
    from: Mailbox,
    /// The domain of Message-IDs.
    domain: String,
    wake: Arc<Notify>,
    /// Seals the one-time codes queued mails carry.
    code_box: SecretBox,
}

/// Where the code goes in a link template.
pub const CODE_PLACEHOLDER: &str = "{{.Code}}";

impl Mailer {
    pub fn new(settings: &Settings, code_box: SecretBox) -> Result<Self, MailSetupError> {
        let templates = Templates::load(settings.templates_dir.as_deref())?;
        let transport = match &settings.smtp_url {
            Some(url) => Transport::smtp(url),
            None => Transport::files(&settings.mail_dir()),
        }
        .map_err(MailSetupError::Transport)?;
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|e| MailSetupError::From(format!("{e}")))?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            templates,
            transport,
            from,
            domain,
            wake: Arc::new(Notify::new()),
            code_box,
        })
    }

    /// The template variables: the context, with the code put in.
    fn template_values(
        context: &MailContext,
        code: Option<&str>,
    ) -> Result<minijinja::Value, TemplateError> {
        let mut context = context.clone();
        if let (Some(code), Some(link)) = (code, context.link.as_mut()) {
            *link = link.replace(CODE_PLACEHOLDER, code);
        }
        let mut values =
            serde_json::to_value(&context).map_err(|e| TemplateError(e.to_string()))?;
        if let (Some(code), Some(object)) = (code, values.as_object_mut()) {
            object.insert("code".into(), code.into());
        }
        Ok(minijinja::Value::from(minijinja::value::Serde(values)))
    }

    /// Writes `mail` as a pending outbox row, inside the caller's
    /// transaction: its subject, its context and its code, sealed. The
    /// bodies are rendered at delivery, off the write path. Call
    /// [`Mailer::wake`] after the commit.
    pub fn enqueue(
        &self,
        conn: &mut DbConnection,
        mail: OutgoingMail<'_>,
        now: NaiveDateTime,
    ) -> Result<String, ApiError> {
        let mail_template_error =
            |e: TemplateError| ApiError::internal(format!("mail template: {e}"));
        // The subject is rendered without the code: it is stored in the clear.
        let subject = self
            .templates
            .subject(
                mail.kind,
                mail.language,
                &Self::template_values(&mail.context, None).map_err(mail_template_error)?,
            )
            .map_err(mail_template_error)?;
        let id = crate::db::new_row_id();
        let sealed_code = match mail.code {
            Some(code) => Some(self.seal_code(&id, code).map_err(ApiError::internal)?),
            None => None,
        };
        let row = OutboxRow {
            message_id: format!("<{id}@{}>", self.domain),
            id: id.clone(),
            kind: mail.kind.name().to_owned(),
            language: mail.language.to_owned(),
            recipient: mail.recipient.to_owned(),
            subject,
            context: serde_json::to_string(&mail.context).map_err(ApiError::internal)?,
            sealed_code,
            status: rows::PENDING.to_owned(),
            attempts: 0,
            next_attempt_at: now,
            lease_owner: None,
            lease_until: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            sent_at: None,
        };
        rows::insert(conn, &row)?;
        Ok(id)
    }

    /// Whether a dead row can be sent again: a mail that carried a one-time
    /// code cannot, the code was erased when the row died.
    pub fn check_retry(&self, row: &OutboxRow) -> Result<(), ApiError> {
        if MailKind::of_row(row)
            .map_err(ApiError::internal)?
            .carries_secret()
        {
            return Err(ApiError::conflict(
                "This mail carried a one-time code, which is not kept after delivery fails for good; \
                 ask for a new code instead.",
            ));
        }
        Ok(())
    }

    /// nonce ‖ ciphertext, bound to the outbox row's id.
    fn seal_code(&self, outbox_id: &str, code: &str) -> Result<Vec<u8>, String> {
        self.code_box.seal_joined(outbox_id, code.as_bytes())
    }

    fn open_code(&self, outbox_id: &str, sealed: &[u8]) -> Result<String, String> {
        let code = self
            .code_box
            .open_joined(outbox_id, sealed)
            .map_err(|e| format!("the mail's one-time code: {e}"))?;
        String::from_utf8(code).map_err(|_| "the sealed code is not text".to_owned())
    }

    /// Renders a row's bodies, with its code opened.
    fn render_row(&self, row: &OutboxRow) -> Result<Rendered, String> {
        let kind = MailKind::of_row(row)?;
        let context: MailContext = serde_json::from_str(&row.context)
            .map_err(|e| format!("the stored mail context does not parse: {e}"))?;
        let code = match (&row.sealed_code, kind.carries_secret()) {
            (Some(sealed), _) => Some(self.open_code(&row.id, sealed)?),
            (None, true) => return Err("the mail's one-time code is no longer stored".to_owned()),
            (None, false) => None,
        };
        let values = Self::template_values(&context, code.as_deref())
            .map_err(|e| format!("mail template: {e}"))?;
        self.templates
            .render(kind, &row.language, &values)
            .map_err(|e| format!("mail template: {e}"))
    }

    /// Tells the delivery worker that rows are waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The lettre message of a row: multipart/alternative, with the row's
    /// stable Message-ID (a resend after a crash carries the same one).
    fn message(&self, row: &OutboxRow) -> Result<Message, String> {
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|e| format!("invalid recipient address: {e}"))?;
        let rendered = self.render_row(row)?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .message_id(Some(row.message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| format!("cannot build the mail: {e}"))
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }
}
