//! Mail templates: for each kind a subject, a plain-text and an HTML body,
//! in English and German. The copies in `templates/email/` are compiled in;
//! `LATCHKEY_TEMPLATES_DIR` points at an operator's own copy of that folder,
//! read at start-up. Every template is parsed at start-up, so a broken one
//! stops the server with the file's name instead of failing a login later.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

use super::MailKind;

macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/email/", $name)))),*]
    };
}

/// The compiled-in templates, by file name.
const EMBEDDED: &[(&str, &str)] = embedded![
    "login_otp.subject.txt",
    "login_otp.txt",
    "login_otp.html",
    "login_otp.de.subject.txt",
    "login_otp.de.txt",
    "login_otp.de.html",
    "security_notice.subject.txt",
    "security_notice.txt",
    "security_notice.html",
    "security_notice.de.subject.txt",
    "security_notice.de.txt",
    "security_notice.de.html",
];

/// Languages beside the default English.
pub const LANGUAGES: &[&str] = &["en", "de"];
const PARTS: &[&str] = &["subject.txt", "txt", "html"];

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
}

fn file_name(kind: MailKind, language: &str, part: &str) -> String {
    if language == "en" {
        format!("{}.{part}", kind.name())
    } else {
        format!("{}.{language}.{part}", kind.name())
    }
}

impl Templates {
    /// Loads every kind × language × part, from `dir/email/` or the
    /// compiled-in copies. An English file is required; another language
    /// may be missing (English is used instead).
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // Values are HTML-escaped in `.html` templates (minijinja's default
        // for that extension) and left alone in `.txt` ones.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for kind in MailKind::ALL {
            for language in LANGUAGES {
                for part in PARTS {
                    let name = file_name(*kind, language, part);
                    let source = match dir {
                        Some(dir) => read_file(&dir.join("email").join(&name), *language == "en")?,
                        None => EMBEDDED
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, s)| (*s).to_owned()),
                    };
                    let Some(source) = source else {
                        if *language == "en" {
                            return Err(TemplateError(format!(
                                "the English template {name} is missing"
                            )));
                        }
                        continue;
                    };
                    let location = match dir {
                        Some(dir) => dir.join("email").join(&name).display().to_string(),
                        None => format!("templates/email/{name} (built in)"),
                    };
                    env.add_template_owned(name, source).map_err(|e| {
                        TemplateError(format!("template {location} does not parse: {e}"))
                    })?;
                }
            }
        }
        Ok(Self { env })
    }

    /// Renders one part in `language`, falling back to English.
    fn part(
        &self,
        kind: MailKind,
        language: &str,
        part: &str,
        context: &Value,
    ) -> Result<String, TemplateError> {
        let language = if LANGUAGES.contains(&language) {
            language
        } else {
            "en"
        };
        let localized = file_name(kind, language, part);
        let template = self
            .env
            .get_template(&localized)
            .or_else(|_| self.env.get_template(&file_name(kind, "en", part)))
            .map_err(|e| TemplateError(format!("template {localized}: {e}")))?;
        template
            .render(context)
            .map_err(|e| TemplateError(format!("rendering {localized}: {e}")))
    }

    /// The subject line alone (kept in the outbox row when a mail is queued).
    pub fn subject(
        &self,
        kind: MailKind,
        language: &str,
        context: &Value,
    ) -> Result<String, TemplateError> {
        // A subject is one line, whatever the template's line ends are.
        Ok(self
            .part(kind, language, "subject.txt", context)?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// The three parts in `language`, falling back to English.
    pub fn render(
        &self,
        kind: MailKind,
        language: &str,
        context: &Value,
    ) -> Result<Rendered, TemplateError> {
        Ok(Rendered {
            subject: self.subject(kind, language, context)?,
            text: self.part(kind, language, "txt", context)?,
            html: self.part(kind, language, "html", context)?,
        })
    }
}

fn read_file(path: &PathBuf, required: bool) -> Result<Option<String>, TemplateError> {
    match std::fs::read_to_string(path) {
        Ok(source) => Ok(Some(source)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) => Err(TemplateError(format!(
            "LATCHKEY_TEMPLATES_DIR: cannot read template {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(name: &str) -> Value {
        minijinja::context! { display_name => name, code => "123456", expires_in_minutes => 5, application_name => "Portal" }
    }

    #[test]
    fn renders_english_and_german_with_escaping() {
        let templates = Templates::load(None).unwrap();
        let en = templates
            .render(MailKind::LoginOtp, "en", &context("<b>Ann</b> & Co"))
            .unwrap();
        assert_eq!(en.subject, "Your login code for Portal");
        assert!(en.text.contains("123456") && en.text.contains("<b>Ann</b> & Co"));
        assert!(
            en.html.contains("&lt;b&gt;Ann&lt;&#x2f;b&gt; &amp; Co"),
            "{}",
            en.html
        );
        let de = templates
            .render(MailKind::LoginOtp, "de", &context("Ann"))
            .unwrap();
        assert!(de.subject.starts_with("Ihr Anmeldecode"));
        let fallback = templates
            .render(MailKind::LoginOtp, "fr", &context("Ann"))
            .unwrap();
        assert_eq!(fallback.subject, en.subject);
    }

    #[test]
    fn a_broken_template_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("email")).unwrap();
        for (name, source) in EMBEDDED {
            std::fs::write(dir.path().join("email").join(name), source).unwrap();
        }
        std::fs::write(
            dir.path().join("email/login_otp.de.html"),
            "{% if code %}unclosed",
        )
        .unwrap();
        let err = Templates::load(Some(dir.path())).err().unwrap();
        assert!(err.0.contains("login_otp.de.html"), "{}", err.0);

        std::fs::remove_file(dir.path().join("email/login_otp.de.html")).unwrap();
        std::fs::write(dir.path().join("email/login_otp.txt"), "Custom {{ code }}").unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        assert_eq!(
            templates
                .render(MailKind::LoginOtp, "en", &context("A"))
                .unwrap()
                .text,
            "Custom 123456"
        );
        // German HTML missing: English HTML is used.
        assert!(
            templates
                .render(MailKind::LoginOtp, "de", &context("A"))
                .unwrap()
                .html
                .contains("lang=\"en\"")
        );
    }
}
