//! The sops file format in its "binary" form, as clan-core writes it: a JSON object with a
//! single `data` value (AES-256-GCM, 32-byte IV, AAD `data:`) and a `sops` metadata object
//! holding the data key age-encrypted to each recipient and a MAC (SHA-512 of the plaintext,
//! upper-case hex, AES-256-GCM with the `lastmodified` timestamp as AAD).
//!
//! Everything here works on bytes in memory: no files, no environment. Parsing keeps the
//! metadata object as read so that a file that is only re-keyed keeps every field sops wrote.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::keys::{Identities, Recipient};
use crate::Plaintext;

/// The `version` written into new files: the sops release whose output layout we follow.
pub const SOPS_VERSION: &str = "3.9.4";

type SopsCipher = AesGcm<Aes256, U32>;
const IV_LEN: usize = 32;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;
/// AAD of the single value of a binary-store file: its tree path `data` joined as sops does.
const DATA_AAD: &str = "data:";

/// What can go wrong with the content of one sops file. The caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a sops file in binary form: {0}")]
    Layout(String),
    #[error("malformed encrypted value `{field}`: {reason}")]
    Value { field: &'static str, reason: String },
    #[error("none of the {available} available key(s) is a recipient (recipients: {})", recipients.join(", "))]
    NotARecipient {
        recipients: Vec<String>,
        available: usize,
    },
    #[error("no age identity available to decrypt with")]
    NoIdentities,
    #[error("age could not decrypt the data key for `{recipient}`: {source}")]
    DataKey {
        recipient: String,
        source: age::DecryptError,
    },
    #[error("the data key has {0} bytes, expected 32")]
    DataKeyLength(usize),
    #[error("authentication of `{0}` failed: the file was modified or corrupted")]
    Authentication(&'static str),
    #[error("MAC mismatch: the content does not match its MAC (the file was tampered with or corrupted)")]
    MacMismatch,
    #[error("unsupported value type `{0}` (a binary sops file holds a string)")]
    ValueType(String),
    #[error("there are no recipients to encrypt to")]
    NoRecipients,
    #[error("cannot encrypt to `{recipient}`: {reason}")]
    Recipient { recipient: String, reason: String },
    #[error("age encryption failed: {0}")]
    Encrypt(String),
}

/// One `sops.age[]` entry: a recipient and the data key encrypted to it (ASCII-armored age).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeEntry {
    pub recipient: String,
    pub enc: String,
}

/// A parsed sops file. Holds only ciphertext; decrypting needs [`Identities`].
#[derive(Clone, Debug)]
pub struct SopsFile {
    /// The whole document as read, in order, so that unchanged fields are written back as is.
    document: Map<String, Value>,
    /// sops 3.7 wrote no newline after the closing brace, newer versions do; kept as read.
    trailing_newline: bool,
}

impl SopsFile {
    /// Parses a binary-form sops file. Checks its shape, not its cryptography.
    pub fn parse(bytes: &[u8]) -> Result<Self, SopsError> {
        let value: Value = serde_json::from_slice(bytes).map_err(SopsError::Json)?;
        let Value::Object(document) = value else {
            return Err(SopsError::Layout("the top level is not an object".into()));
        };
        if let Some(extra) = document.keys().find(|key| *key != "data" && *key != "sops") {
            return Err(SopsError::Layout(format!(
                "unexpected top-level key `{extra}` (only `data` and `sops`)"
            )));
        }
        let trailing_newline = bytes.ends_with(b"\n");
        let file = SopsFile {
            document,
            trailing_newline,
        };
        let Some(Value::String(_)) = file.document.get("data") else {
            return Err(SopsError::Layout(
                "`data` is missing or not a string".into(),
            ));
        };
        let metadata = file.metadata()?;
        if metadata
            .get("key_groups")
            .is_some_and(|groups| !groups.is_null())
        {
            return Err(SopsError::Layout(
                "`key_groups` (Shamir secret sharing) is not supported".into(),
            ));
        }
        for field in ["lastmodified", "mac"] {
            if !matches!(metadata.get(field), Some(Value::String(_))) {
                return Err(SopsError::Layout(format!(
                    "`sops.{field}` is missing or not a string"
                )));
            }
        }
        if metadata
            .get("mac_only_encrypted")
            .is_some_and(|v| v != &Value::Bool(false))
        {
            return Err(SopsError::Layout(
                "`mac_only_encrypted` is not supported".into(),
            ));
        }
        file.age_entries()?;
        Ok(file)
    }

    /// Writes the file the way sops does: JSON indented with tabs, newline at the end.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(&self.document, &mut serializer)
            .expect("a JSON map serializes into a Vec");
        if self.trailing_newline {
            out.push(b'\n');
        }
        out
    }

    fn metadata(&self) -> Result<&Map<String, Value>, SopsError> {
        match self.document.get("sops") {
            Some(Value::Object(metadata)) => Ok(metadata),
            _ => Err(SopsError::Layout(
                "`sops` metadata is missing or not an object".into(),
            )),
        }
    }

    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        match self.document.get_mut("sops") {
            Some(Value::Object(metadata)) => metadata,
            _ => unreachable!("checked by parse and set by encrypt"),
        }
    }

    fn string_field(&self, field: &str) -> &str {
        self.metadata()
            .ok()
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The `sops.age` entries in file order.
    pub fn age_entries(&self) -> Result<Vec<AgeEntry>, SopsError> {
        let entries = match self.metadata()?.get("age") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(SopsError::Layout("`sops.age` is not a list".into())),
        };
        entries
            .iter()
            .map(|entry| {
                let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
                match (field("recipient"), field("enc")) {
                    (Some(recipient), Some(enc)) => Ok(AgeEntry { recipient, enc }),
                    _ => Err(SopsError::Layout(
                        "an entry of `sops.age` lacks `recipient` or `enc`".into(),
                    )),
                }
            })
            .collect()
    }

    /// The age recipients the data key is encrypted to, sorted and deduplicated.
    pub fn recipients(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .age_entries()
            .unwrap_or_default()
            .into_iter()
            .map(|entry| entry.recipient)
            .collect();
        set.into_iter().collect()
    }

    /// `sops.lastmodified` as written in the file.
    pub fn last_modified(&self) -> &str {
        self.string_field("lastmodified")
    }

    /// Recovers the data key with the first identity that is a recipient.
    fn data_key(&self, identities: &Identities) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        if identities.is_empty() {
            return Err(SopsError::NoIdentities);
        }
        let entries = self.age_entries()?;
        // Try entries addressed to one of our public keys first: one X25519 operation
        // instead of one per identity and entry.
        let mut ordered: Vec<&AgeEntry> = entries
            .iter()
            .filter(|entry| identities.has_public_key(&entry.recipient))
            .collect();
        ordered.extend(
            entries
                .iter()
                .filter(|entry| !identities.has_public_key(&entry.recipient)),
        );
        let mut last_error = None;
        for entry in ordered {
            // Decoding the armor here is faster than age's streaming armor reader; anything
            // unusual goes through age's reader. age authenticates the bytes either way.
            let opened = match dearmor(&entry.enc) {
                Some(binary) => open_age(&binary[..], identities, &entry.recipient),
                None => open_age(
                    age::armor::ArmoredReader::new(entry.enc.as_bytes()),
                    identities,
                    &entry.recipient,
                ),
            };
            match opened {
                Ok(key) if key.len() == DATA_KEY_LEN => return Ok(key),
                Ok(key) => return Err(SopsError::DataKeyLength(key.len())),
                Err(age::DecryptError::NoMatchingKeys) => {}
                Err(source) => {
                    last_error = Some(SopsError::DataKey {
                        recipient: entry.recipient.clone(),
                        source,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| SopsError::NotARecipient {
            recipients: self.recipients(),
            available: identities.len(),
        }))
    }

    /// Decrypts the value and verifies the MAC.
    pub fn decrypt(&self, identities: &Identities) -> Result<Plaintext, SopsError> {
        let key = self.data_key(identities)?;
        self.decrypt_with_key(&key)
    }

    /// Decrypts with a data key obtained elsewhere (e.g. by `age -d` of an `enc` entry).
    pub fn decrypt_with_data_key(&self, key: &[u8]) -> Result<Plaintext, SopsError> {
        self.decrypt_with_key(key)
    }

    fn decrypt_with_key(&self, key: &[u8]) -> Result<Plaintext, SopsError> {
        let data = self
            .document
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plaintext = if data.is_empty() {
            Zeroizing::new(Vec::new())
        } else {
            let value = EncryptedValue::parse("data", data)?;
            if value.kind != "str" && value.kind != "bytes" {
                return Err(SopsError::ValueType(value.kind));
            }
            value.open(key, DATA_AAD.as_bytes(), "data")?
        };
        let mac = EncryptedValue::parse("mac", self.string_field("mac"))?;
        let aad = go_rfc3339(self.last_modified());
        let stored_mac = mac.open(key, aad.as_bytes(), "mac")?;
        let computed = hex::encode_upper(Sha512::digest(&plaintext[..]));
        if !constant_time_eq(stored_mac.as_slice(), computed.as_bytes()) {
            return Err(SopsError::MacMismatch);
        }
        Ok(Plaintext::new(plaintext))
    }

    /// Changes the recipients of the data key without changing the data key or the value, as
    /// `sops updatekeys` does: entries of remaining recipients are kept verbatim, new ones are
    /// added. Verifies the MAC first. Returns whether anything changed.
    pub fn set_recipients(
        &mut self,
        recipients: &[Recipient],
        identities: &Identities,
    ) -> Result<bool, SopsError> {
        let wanted: BTreeSet<&str> = recipients.iter().map(Recipient::as_str).collect();
        if wanted.is_empty() {
            return Err(SopsError::NoRecipients);
        }
        let current = self.age_entries()?;
        let have: BTreeSet<&str> = current
            .iter()
            .map(|entry| entry.recipient.as_str())
            .collect();
        if have == wanted && current.len() == wanted.len() {
            return Ok(false);
        }
        let key = self.data_key(identities)?;
        self.decrypt_with_key(&key)?;
        let mut entries = Vec::with_capacity(wanted.len());
        for recipient in recipients_sorted(recipients) {
            match current
                .iter()
                .find(|entry| entry.recipient == recipient.as_str())
            {
                Some(entry) => entries.push(entry.clone()),
                None => entries.push(AgeEntry {
                    recipient: recipient.as_str().to_owned(),
                    enc: encrypt_data_key(&key, recipient)?,
                }),
            }
        }
        self.metadata_mut()
            .insert("age".into(), age_entries_json(&entries));
        Ok(true)
    }
}

/// Encrypts `plaintext` into a new sops file for `recipients`, with a fresh data key.
pub fn encrypt(plaintext: &[u8], recipients: &[Recipient]) -> Result<SopsFile, SopsError> {
    encrypt_at(plaintext, recipients, SystemTime::now())
}

/// [`encrypt`] with an explicit `lastmodified` time (for reproducible tests).
pub fn encrypt_at(
    plaintext: &[u8],
    recipients: &[Recipient],
    now: SystemTime,
) -> Result<SopsFile, SopsError> {
    let recipients = recipients_sorted(recipients);
    if recipients.is_empty() {
        return Err(SopsError::NoRecipients);
    }
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    let entries = recipients
        .iter()
        .map(|recipient| {
            Ok(AgeEntry {
                recipient: recipient.as_str().to_owned(),
                enc: encrypt_data_key(&key[..], recipient)?,
            })
        })
        .collect::<Result<Vec<_>, SopsError>>()?;
    let last_modified = rfc3339_utc(now);
    let data = if plaintext.is_empty() {
        String::new()
    } else {
        seal(&key[..], plaintext, DATA_AAD.as_bytes())
    };
    let mac_plain = hex::encode_upper(Sha512::digest(plaintext));
    let mac = seal(&key[..], mac_plain.as_bytes(), last_modified.as_bytes());

    let mut metadata = Map::new();
    metadata.insert("age".into(), age_entries_json(&entries));
    metadata.insert("lastmodified".into(), Value::String(last_modified));
    metadata.insert("mac".into(), Value::String(mac));
    metadata.insert(
        "unencrypted_suffix".into(),
        Value::String("_unencrypted".into()),
    );
    metadata.insert("version".into(), Value::String(SOPS_VERSION.into()));
    let mut document = Map::new();
    document.insert("data".into(), Value::String(data));
    document.insert("sops".into(), Value::Object(metadata));
    Ok(SopsFile {
        document,
        trailing_newline: true,
    })
}

/// Decrypts a sops file given as bytes and verifies its MAC.
pub fn decrypt(bytes: &[u8], identities: &Identities) -> Result<Plaintext, SopsError> {
    SopsFile::parse(bytes)?.decrypt(identities)
}

/// Decrypts many sops files on all available cores; results in input order. The work per
/// file is dominated by one X25519 operation, so this scales with the cores.
pub fn decrypt_many<B: AsRef<[u8]> + Sync>(
    files: &[B],
    identities: &Identities,
) -> Vec<Result<Plaintext, SopsError>> {
    parallel_map(files, |file| decrypt(file.as_ref(), identities))
}

/// `items.iter().map(work)` spread over the available cores, in order.
pub(crate) fn parallel_map<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(work).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn open_age<R: std::io::BufRead>(
    input: R,
    identities: &Identities,
    recipient: &str,
) -> Result<Zeroizing<Vec<u8>>, age::DecryptError> {
    let decryptor = age::Decryptor::new_buffered(input)?;
    let mut reader = decryptor.decrypt(identities.age_identities_for(recipient))?;
    let mut key = Zeroizing::new(Vec::with_capacity(DATA_KEY_LEN));
    reader.read_to_end(&mut key)?;
    Ok(key)
}

/// The bytes inside age's ASCII armor, or `None` if it is not the plain form sops writes.
fn dearmor(armored: &str) -> Option<Zeroizing<Vec<u8>>> {
    let body = armored
        .trim()
        .strip_prefix("-----BEGIN AGE ENCRYPTED FILE-----")?
        .strip_suffix("-----END AGE ENCRYPTED FILE-----")?;
    let mut base64 = String::with_capacity(body.len());
    for line in body.lines().map(str::trim_end) {
        base64.push_str(line);
    }
    BASE64.decode(base64).ok().map(Zeroizing::new)
}

fn recipients_sorted(recipients: &[Recipient]) -> Vec<&Recipient> {
    let mut sorted: Vec<&Recipient> = recipients.iter().collect();
    sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    sorted.dedup_by(|a, b| a.as_str() == b.as_str());
    sorted
}

fn age_entries_json(entries: &[AgeEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|entry| {
                let mut object = Map::new();
                object.insert("recipient".into(), Value::String(entry.recipient.clone()));
                object.insert("enc".into(), Value::String(entry.enc.clone()));
                Value::Object(object)
            })
            .collect(),
    )
}

fn encrypt_data_key(key: &[u8], recipient: &Recipient) -> Result<String, SopsError> {
    let age_recipient = recipient.to_age().map_err(|reason| SopsError::Recipient {
        recipient: recipient.as_str().to_owned(),
        reason,
    })?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&age_recipient as &dyn age::Recipient))
            .map_err(|error| SopsError::Encrypt(error.to_string()))?;
    let mut armored = Vec::with_capacity(512);
    let encrypt = || -> std::io::Result<()> {
        let armor =
            age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)?;
        let mut writer = encryptor.wrap_output(armor)?;
        writer.write_all(key)?;
        writer.finish()?.finish()?;
        Ok(())
    };
    encrypt().map_err(|error| SopsError::Encrypt(error.to_string()))?;
    let mut text =
        String::from_utf8(armored).map_err(|error| SopsError::Encrypt(error.to_string()))?;
    // sops (Go age) ends the armor with a newline; the Rust armor writer does not.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`.
struct EncryptedValue {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

impl EncryptedValue {
    fn parse(field: &'static str, text: &str) -> Result<Self, SopsError> {
        let bad = |reason: &str| SopsError::Value {
            field,
            reason: reason.to_owned(),
        };
        let inner = text
            .strip_prefix("ENC[AES256_GCM,")
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or_else(|| bad("not of the form ENC[AES256_GCM,…]"))?;
        let mut parts = [None; 4];
        for part in inner.split(',') {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| bad("a part lacks `name:`"))?;
            let slot = match name {
                "data" => 0,
                "iv" => 1,
                "tag" => 2,
                "type" => 3,
                _ => return Err(bad(&format!("unknown part `{name}`"))),
            };
            if parts[slot].replace(value).is_some() {
                return Err(bad(&format!("part `{name}` appears twice")));
            }
        }
        let [Some(data), Some(iv), Some(tag), Some(kind)] = parts else {
            return Err(bad("needs data, iv, tag and type"));
        };
        let decode = |name: &str, value: &str| {
            BASE64
                .decode(value)
                .map_err(|error| bad(&format!("{name} is not base64: {error}")))
        };
        let value = EncryptedValue {
            data: decode("data", data)?,
            iv: decode("iv", iv)?,
            tag: decode("tag", tag)?,
            kind: kind.to_owned(),
        };
        if value.iv.len() != IV_LEN {
            return Err(bad(&format!(
                "the IV has {} bytes, expected {IV_LEN}",
                value.iv.len()
            )));
        }
        if value.tag.len() != TAG_LEN {
            return Err(bad(&format!(
                "the tag has {} bytes, expected {TAG_LEN}",
                value.tag.len()
            )));
        }
        Ok(value)
    }

    fn open(
        &self,
        key: &[u8],
        aad: &[u8],
        field: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, SopsError> {
        let cipher =
            SopsCipher::new_from_slice(key).map_err(|_| SopsError::DataKeyLength(key.len()))?;
        let mut sealed = Vec::with_capacity(self.data.len() + TAG_LEN);
        sealed.extend_from_slice(&self.data);
        sealed.extend_from_slice(&self.tag);
        let nonce = aes_gcm::Nonce::<U32>::from_slice(&self.iv);
        cipher
            .decrypt(nonce, Payload { msg: &sealed, aad })
            .map(Zeroizing::new)
            .map_err(|_| SopsError::Authentication(field))
    }
}

fn seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> String {
    let cipher = SopsCipher::new_from_slice(key).expect("the data key has 32 bytes");
    let mut iv = [0u8; IV_LEN];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let nonce = aes_gcm::Nonce::<U32>::from_slice(&iv);
    let sealed = cipher
        .encrypt(
            nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let (data, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:str]",
        BASE64.encode(data),
        BASE64.encode(iv),
        BASE64.encode(tag)
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// sops authenticates the MAC with `time.Parse(RFC3339, s).Format(RFC3339)`: fractional
/// seconds are dropped and a zero offset is written `Z`.
fn go_rfc3339(stored: &str) -> String {
    let (main, zone) = match stored.rfind(['Z', 'z', '+', '-']) {
        Some(at) if at >= 19 => stored.split_at(at),
        _ => return stored.to_owned(),
    };
    let main = main.split_once('.').map_or(main, |(seconds, _)| seconds);
    let zone = match zone {
        "z" | "+00:00" | "-00:00" => "Z",
        other => other,
    };
    format!("{main}{zone}")
}

/// RFC 3339 in UTC with whole seconds, as sops writes `lastmodified`.
pub(crate) fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |s: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_692_781_868), "2023-08-23T09:11:08Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn go_time_format_normalisation() {
        assert_eq!(go_rfc3339("2023-08-23T09:11:08Z"), "2023-08-23T09:11:08Z");
        assert_eq!(
            go_rfc3339("2023-08-23T09:11:08.123456Z"),
            "2023-08-23T09:11:08Z"
        );
        assert_eq!(
            go_rfc3339("2023-08-23T09:11:08+00:00"),
            "2023-08-23T09:11:08Z"
        );
        assert_eq!(
            go_rfc3339("2023-08-23T11:11:08.5+02:00"),
            "2023-08-23T11:11:08+02:00"
        );
    }

    #[test]
    fn authentic_data_with_the_wrong_mac_is_a_mac_mismatch() {
        let identity = age::x25519::Identity::generate();
        let recipient: Recipient = identity.to_public().to_string().parse().unwrap();
        let mut identities = Identities::default();
        identities.push(identity);
        let mut file = encrypt(b"original", &[recipient]).unwrap();
        let key = file.data_key(&identities).unwrap();
        // Re-encrypting the value with the real data key passes AES-GCM but not the MAC.
        file.document.insert(
            "data".into(),
            Value::String(seal(&key, b"replaced", DATA_AAD.as_bytes())),
        );
        assert!(matches!(
            file.decrypt(&identities),
            Err(SopsError::MacMismatch)
        ));
    }

    #[test]
    fn data_keys_open_with_crlf_armor_and_fail_cleanly_on_garbage() {
        let identity = age::x25519::Identity::generate();
        let recipient: Recipient = identity.to_public().to_string().parse().unwrap();
        let mut identities = Identities::default();
        identities.push(identity);
        let file = encrypt(b"value", std::slice::from_ref(&recipient)).unwrap();
        let crlf = String::from_utf8(file.to_bytes())
            .unwrap()
            .replace("\\n", "\\r\\n");
        assert_eq!(
            decrypt(crlf.as_bytes(), &identities).unwrap().expose(),
            b"value"
        );
        let garbage = String::from_utf8(file.to_bytes()).unwrap().replace(
            "-----BEGIN AGE ENCRYPTED FILE-----\\n",
            "-----BEGIN AGE ENCRYPTED FILE-----\\n!!",
        );
        assert!(matches!(
            decrypt(garbage.as_bytes(), &identities),
            Err(SopsError::DataKey { .. })
        ));
    }

    #[test]
    fn encrypted_value_rejects_garbage_without_panicking() {
        for text in [
            "",
            "ENC[",
            "ENC[AES256_GCM,]",
            "ENC[AES256_GCM,data:,iv:,tag:,type:str]",
            "ENC[AES256_GCM,data:!,iv:x,tag:y,type:str]",
        ] {
            assert!(EncryptedValue::parse("data", text).is_err(), "{text}");
        }
    }
}
