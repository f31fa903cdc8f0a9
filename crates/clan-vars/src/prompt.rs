//! Prompt answers: what a run must ask, the answers (redacted `Debug`, zeroized), and
//! answers read from JSON for tests and CI. Asking on a terminal is the binary's job.
//!
//! The JSON form is `{"<generator>": {"<prompt>": "value"}}`; a key `"<machine>/<generator>"`
//! answers for that machine only and wins over the plain one.

use std::collections::BTreeMap;
use std::fmt;

use clan_config::Prompt;
use zeroize::Zeroizing;

use crate::graph::{GeneratorKey, Placement};
use crate::Error;

/// One prompt a run needs answered.
#[derive(Clone, Debug)]
pub struct PromptRequest {
    pub generator: GeneratorKey,
    pub name: String,
    pub prompt: Prompt,
}

/// Answers by generator and prompt name.
#[derive(Clone, Default)]
pub struct Answers(BTreeMap<(GeneratorKey, String), Zeroizing<String>>);

impl fmt::Debug for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .keys()
                    .map(|(key, prompt)| format!("{key}/{prompt}: [REDACTED]")),
            )
            .finish()
    }
}

impl Answers {
    pub fn insert(&mut self, generator: GeneratorKey, prompt: &str, value: Zeroizing<String>) {
        self.0.insert((generator, prompt.to_owned()), value);
    }

    pub fn get(&self, generator: &GeneratorKey, prompt: &str) -> Option<&str> {
        self.0
            .get(&(generator.clone(), prompt.to_owned()))
            .map(|value| value.as_str())
    }

    pub fn contains(&self, request: &PromptRequest) -> bool {
        self.get(&request.generator, &request.name).is_some()
    }

    /// Answers the `requests` found in `json` (see the module docs); others stay unanswered.
    pub fn fill_from_json(
        &mut self,
        json: &[u8],
        source_name: &str,
        requests: &[PromptRequest],
    ) -> Result<(), Error> {
        let malformed = |reason: String| Error::PromptValues {
            source_name: source_name.to_owned(),
            reason,
        };
        // Parse into zeroizing strings only; serde_json's Value would leave copies around.
        let parsed: BTreeMap<String, BTreeMap<String, Zeroizing<String>>> =
            serde_json::from_slice(json).map_err(|error| {
                malformed(format!(
                "expected {{\"<generator>\": {{\"<prompt>\": \"<value>\"}}}} (line {}, column {})",
                error.line(),
                error.column()
            ))
            })?;
        for request in requests {
            let name = &request.generator.name;
            let specific = match &request.generator.placement {
                Placement::PerMachine(machine) => parsed.get(&format!("{machine}/{name}")),
                Placement::Shared => None,
            };
            let value = specific
                .and_then(|answers| answers.get(&request.name))
                .or_else(|| {
                    parsed
                        .get(name)
                        .and_then(|answers| answers.get(&request.name))
                });
            if let Some(value) = value {
                self.insert(request.generator.clone(), &request.name, value.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(machine: &str, generator: &str) -> PromptRequest {
        PromptRequest {
            generator: GeneratorKey {
                placement: Placement::PerMachine(machine.parse().unwrap()),
                name: generator.into(),
            },
            name: "pw".into(),
            prompt: serde_json::from_value(serde_json::json!({})).unwrap(),
        }
    }

    #[test]
    fn machine_specific_answers_win() {
        let requests = [request("a", "g"), request("b", "g"), request("c", "h")];
        let mut answers = Answers::default();
        answers
            .fill_from_json(
                br#"{"g": {"pw": "all"}, "b/g": {"pw": "bee"}}"#,
                "test",
                &requests,
            )
            .unwrap();
        assert_eq!(answers.get(&requests[0].generator, "pw"), Some("all"));
        assert_eq!(answers.get(&requests[1].generator, "pw"), Some("bee"));
        assert!(!answers.contains(&requests[2]));
        assert!(!format!("{answers:?}").contains("bee"));
    }

    #[test]
    fn malformed_json_does_not_echo_values() {
        let error = Answers::default()
            .fill_from_json(br#"{"g": {"pw": 5}}"#, "file.json", &[])
            .unwrap_err();
        assert!(error.to_string().contains("file.json"));
    }
}
