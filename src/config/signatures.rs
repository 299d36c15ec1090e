//! The shape of `signatures = [...]` on a trigger (`triggers.toml`): the
//! signature schemes a trigger accepts from senders that sign their
//! requests with a shared secret instead of sending a credential. Checked
//! (secret lengths, names, header names) where triggers are compiled
//! (`auth::signed`).

use secrecy::SecretString;
use serde::Deserialize;

use super::SignatureEncoding;

/// One accepted scheme with its secret. Several entries of one scheme are
/// several secrets (rotation): any of them may match.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TriggerSignatureConfig {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` (±5 min) and
    /// `webhook-signature` (`v1,<base64>` list) over `id.timestamp.body`.
    StandardWebhooks {
        /// `whsec_<base64>`, at least 24 bytes once decoded.
        secret: SecretString,
        /// The principal's last part (`sig:<trigger>:<name>`); default: the
        /// scheme's name.
        name: Option<String>,
    },
    /// HubSpot's `X-HubSpot-Signature-v3` (base64 HMAC-SHA256 of method,
    /// public URL, body and `X-HubSpot-Request-Timestamp`, ±5 min).
    HubspotV3 {
        /// The HubSpot app's client secret.
        secret: SecretString,
        name: Option<String>,
    },
    /// HMAC-SHA256 of the raw body in a header, e.g. GitHub's
    /// `X-Hub-Signature-256: sha256=<hex>`. No timestamp: see the README.
    HmacSha256 {
        secret: SecretString,
        /// The header carrying the signature.
        header: String,
        /// Text before the signature (`sha256=`); default none.
        #[serde(default)]
        prefix: String,
        /// `hex` (default) or `base64`.
        #[serde(default)]
        encoding: SignatureEncoding,
        name: Option<String>,
    },
}

impl TriggerSignatureConfig {
    /// The scheme's name as written in the file.
    pub fn scheme(&self) -> &'static str {
        match self {
            TriggerSignatureConfig::StandardWebhooks { .. } => "standard-webhooks",
            TriggerSignatureConfig::HubspotV3 { .. } => "hubspot-v3",
            TriggerSignatureConfig::HmacSha256 { .. } => "hmac-sha256",
        }
    }

    /// The configured name, else the scheme's.
    pub fn name(&self) -> &str {
        let name = match self {
            TriggerSignatureConfig::StandardWebhooks { name, .. }
            | TriggerSignatureConfig::HubspotV3 { name, .. }
            | TriggerSignatureConfig::HmacSha256 { name, .. } => name.as_deref(),
        };
        name.unwrap_or(self.scheme())
    }
}
