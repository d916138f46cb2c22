//! The prompts the attendant plays, and their catalog of pre-encoded frames.

use std::fmt;
use std::str::FromStr;

/// A prompt the attendant plays. The names are the WAV files' names and
/// what scenarios and call records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PromptId {
    /// "Welcome. Please enter your conference ID, followed by the pound key."
    Welcome,
    /// "That conference ID is not valid. Please try again."
    NotValid,
    /// "We did not get any input."
    NoInput,
    /// "Goodbye."
    Goodbye,
    /// "Joining the meeting."
    Joining,
    /// "You are the first person in the meeting."
    FirstPerson,
}

impl PromptId {
    pub const ALL: [PromptId; 6] = [
        PromptId::Welcome,
        PromptId::NotValid,
        PromptId::NoInput,
        PromptId::Goodbye,
        PromptId::Joining,
        PromptId::FirstPerson,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PromptId::Welcome => "welcome",
            PromptId::NotValid => "not-valid",
            PromptId::NoInput => "no-input",
            PromptId::Goodbye => "goodbye",
            PromptId::Joining => "joining",
            PromptId::FirstPerson => "first-person",
        }
    }
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PromptId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PromptId::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = PromptId::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "'{s}' is not a prompt: the prompts are {}",
                    names.join(", ")
                )
            })
    }
}
