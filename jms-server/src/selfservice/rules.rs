//! The password rules of the settings (`security.password_min_length`,
//! `password_require_*`): listed on the set-password page, and each unmet
//! one named when a password is refused.

use crate::settings::Security;

/// Longest password accepted (PBKDF2 does not need more).
pub const MAX_LENGTH: usize = 1024;

/// One rule: what the page lists, and whether a password meets it.
pub struct Rule {
    pub text: String,
    check: Check,
}

enum Check {
    MinLength(usize),
    MaxLength(usize),
    Upper,
    Lower,
    Digit,
    Symbol,
}

impl Rule {
    pub fn met_by(&self, password: &str) -> bool {
        let any = |f: fn(char) -> bool| password.chars().any(f);
        match self.check {
            Check::MinLength(n) => password.chars().count() >= n,
            Check::MaxLength(n) => password.chars().count() <= n,
            Check::Upper => any(char::is_uppercase),
            Check::Lower => any(char::is_lowercase),
            Check::Digit => any(|c| c.is_ascii_digit()),
            Check::Symbol => any(|c| !c.is_alphanumeric() && !c.is_whitespace()),
        }
    }
}

/// The rules in force, in the order the page lists them.
pub fn rules(security: &Security) -> Vec<Rule> {
    let min = security.password_min_length as usize;
    let mut rules = vec![
        Rule {
            text: format!("At least {min} characters"),
            check: Check::MinLength(min),
        },
        Rule {
            text: format!("At most {MAX_LENGTH} characters"),
            check: Check::MaxLength(MAX_LENGTH),
        },
    ];
    let classes = [
        (
            security.password_require_uppercase,
            "At least one upper-case letter (A-Z)",
            Check::Upper,
        ),
        (
            security.password_require_lowercase,
            "At least one lower-case letter (a-z)",
            Check::Lower,
        ),
        (
            security.password_require_digit,
            "At least one digit (0-9)",
            Check::Digit,
        ),
        (
            security.password_require_symbol,
            "At least one symbol (such as ! # % - _)",
            Check::Symbol,
        ),
    ];
    for (required, text, check) in classes {
        if required {
            rules.push(Rule {
                text: text.to_string(),
                check,
            });
        }
    }
    rules
}

/// The rules `password` does not meet, as messages.
pub fn unmet(security: &Security, password: &str) -> Vec<String> {
    rules(security)
        .into_iter()
        .filter(|rule| !rule.met_by(password))
        .map(|rule| format!("Not met: {}", rule.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unmet_rule_is_named() {
        let mut security = Security {
            password_min_length: 10,
            password_require_symbol: true,
            ..Security::default()
        };
        assert_eq!(
            unmet(&security, "abc"),
            vec![
                "Not met: At least 10 characters",
                "Not met: At least one upper-case letter (A-Z)",
                "Not met: At least one digit (0-9)",
                "Not met: At least one symbol (such as ! # % - _)",
            ]
        );
        assert!(unmet(&security, "Correct-Horse-9").is_empty());
        security.password_require_symbol = false;
        assert!(unmet(&security, "CorrectHorse9").is_empty());
        assert_eq!(rules(&security).len(), 5);
    }
}
