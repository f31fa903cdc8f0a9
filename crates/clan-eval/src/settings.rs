//! Role settings: the deep merge (role < tag < machine, the more specific winning) and the
//! validation against the role's JSON Schema with its defaults applied.

use serde_json::{Map, Value};

/// Merges `overlay` into `base`; objects merge key by key, anything else is replaced.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Fills in `default`s from an object schema's `properties`, recursing into nested objects.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    let (Some(properties), Value::Object(object)) =
        (schema.get("properties").and_then(Value::as_object), value)
    else {
        return;
    };
    for (key, property) in properties {
        match object.get_mut(key) {
            Some(existing) => apply_defaults(property, existing),
            None => {
                if let Some(default) = property.get("default") {
                    object.insert(key.clone(), default.clone());
                } else if property.get("properties").is_some() {
                    let mut nested = Value::Object(Map::new());
                    apply_defaults(property, &mut nested);
                    if nested.as_object().is_some_and(|nested| !nested.is_empty()) {
                        object.insert(key.clone(), nested);
                    }
                }
            }
        }
    }
}

/// A role's compiled settings schema.
pub struct SettingsSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

/// One reason settings do not fit their schema: where, and what.
pub struct Violation {
    /// Dotted path inside the settings (`authorizedKeys.0`), empty for the whole object.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl SettingsSchema {
    /// Compiles `schema`; `format` is checked (the standard formats and `ip-address`, an IPv4
    /// or IPv6 address), so a setting that a program on the machine would reject can be
    /// refused here.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .with_format("ip-address", |text| {
                text.parse::<std::net::IpAddr>().is_ok()
            })
            .build(schema)
            .map_err(|error| error.to_string())?;
        Ok(Self {
            schema: schema.clone(),
            validator,
        })
    }

    /// Applies defaults, then validates; returns the complete settings or the first violation.
    pub fn complete(&self, mut settings: Value) -> Result<Value, Violation> {
        apply_defaults(&self.schema, &mut settings);
        if let Some(error) = self.validator.iter_errors(&settings).next() {
            let key = error
                .instance_path
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".");
            let known = self.schema.get("properties").and_then(Value::as_object);
            let described = described_setting(&self.schema, &key);
            let hint = described.or_else(|| {
                known.map(|known| {
                    let names: Vec<&str> = known.keys().map(String::as_str).collect();
                    let unexpected = error.to_string();
                    unexpected
                        .split('\'')
                        .nth(1)
                        .and_then(|wrong| {
                            clan_inventory::did_you_mean(wrong, names.iter().copied())
                        })
                        .unwrap_or_else(|| format!("settings of this role: {}", names.join(", ")))
                })
            });
            return Err(Violation {
                key,
                message: error.to_string(),
                hint,
            });
        }
        Ok(settings)
    }
}

/// `` `setting`: its description `` for the top-level setting that `key` (`interfaces.0`) lies
/// in, when the schema describes it: says what a refused value should look like.
fn described_setting(schema: &Value, key: &str) -> Option<String> {
    let setting = key.split('.').next().filter(|s| !s.is_empty())?;
    let description = schema
        .get("properties")?
        .get(setting)?
        .get("description")?
        .as_str()?;
    Some(format!("`{setting}`: {description}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_more_specific_setting_wins_and_objects_merge() {
        let mut settings = json!({"a": 1, "nested": {"x": 1, "y": 1}});
        deep_merge(&mut settings, &json!({"nested": {"y": 2}, "b": [1]}));
        deep_merge(&mut settings, &json!({"a": 3, "b": [2]}));
        assert_eq!(
            settings,
            json!({"a": 3, "nested": {"x": 1, "y": 2}, "b": [2]})
        );
    }

    #[test]
    fn defaults_fill_missing_keys_only() {
        let schema = json!({"type": "object", "properties": {
            "port": {"type": "integer", "default": 22},
            "greeting": {"type": "string", "default": "Hello"},
            "tls": {"type": "object", "properties": {"enable": {"type": "boolean", "default": false}}}
        }});
        let complete = SettingsSchema::compile(&schema)
            .unwrap()
            .complete(json!({"greeting": "Hi"}))
            .ok()
            .unwrap();
        assert_eq!(
            complete,
            json!({"greeting": "Hi", "port": 22, "tls": {"enable": false}})
        );
    }

    #[test]
    fn a_violation_names_the_key_and_suggests_the_right_one() {
        let schema = json!({"type": "object", "additionalProperties": false, "properties": {
            "port": {"type": "integer"}, "greeting": {"type": "string"}
        }});
        let compiled = SettingsSchema::compile(&schema).unwrap();
        let wrong_type = compiled.complete(json!({"port": "22"})).err().unwrap();
        assert_eq!(wrong_type.key, "port");
        let typo = compiled.complete(json!({"greting": "x"})).err().unwrap();
        assert_eq!(typo.hint.as_deref(), Some("did you mean `greeting`?"));
    }

    #[test]
    fn formats_are_checked_and_a_refusal_quotes_the_settings_description() {
        let schema = json!({"type": "object", "properties": {
            "listen": {"type": "array", "items": {"type": "string", "format": "ip-address"},
                       "description": "Addresses to listen on"},
            "admin": {"type": "string", "format": "email"}
        }});
        let compiled = SettingsSchema::compile(&schema).unwrap();
        assert!(compiled
            .complete(json!({"listen": ["10.0.0.1", "fd00::1"], "admin": "a@example.org"}))
            .is_ok());
        let refused = compiled
            .complete(json!({"listen": ["eth0"]}))
            .err()
            .unwrap();
        assert_eq!(refused.key, "listen.0");
        assert!(
            refused.message.contains("\"ip-address\""),
            "{}",
            refused.message
        );
        assert_eq!(
            refused.hint.as_deref(),
            Some("`listen`: Addresses to listen on")
        );
        assert!(compiled.complete(json!({"admin": "nobody"})).is_err());
    }
}
