//! Typed access to a TOML table that records problems instead of stopping at the first.

use crate::{Problem, suggest, table_of_key};

pub type Table = toml::Table;

#[derive(Default)]
pub struct Reader {
    problems: Vec<Problem>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl Reader {
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    pub fn problem(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
            hint,
        });
    }

    /// Report every key of `table` that is not in `known`, with a "did you mean" hint.
    pub fn unknown_keys(&mut self, prefix: &str, table: &Table, known: &[&str]) {
        for key in table.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let hint = suggest::did_you_mean(key, known).or_else(|| {
                table_of_key(key)
                    .filter(|t| *t != prefix)
                    .map(|t| format!("`{key}` belongs in the [{t}] table"))
            });
            let what = if prefix.is_empty() { "table" } else { "key" };
            let hint = hint.or_else(|| Some(format!("known keys here: {}", known.join(", "))));
            self.problem(join(prefix, key), format!("unknown {what}"), hint);
        }
    }

    /// A sub-table, cloned. Records a problem when it is missing but required, or not a table.
    pub fn table(&mut self, t: &Table, prefix: &str, name: &str, required: bool) -> Option<Table> {
        let key = join(prefix, name);
        match t.get(name) {
            Some(toml::Value::Table(sub)) => Some(sub.clone()),
            Some(other) => {
                self.problem(
                    key,
                    format!("must be a table, not {}", crate::article(other.type_str())),
                    Some(format!("write it as a [{name}] section")),
                );
                None
            }
            None if required => {
                self.problem(key, "is missing", Some(format!("add a [{name}] section")));
                None
            }
            None => Some(Table::new()),
        }
    }

    /// A string value. None when missing (a problem if required) or of another type.
    pub fn string(&mut self, t: &Table, prefix: &str, key: &str, required: bool) -> Option<String> {
        match t.get(key) {
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    join(prefix, key),
                    format!("must be a string, not {}", crate::article(other.type_str())),
                    Some(format!("quote the value: {key} = \"{other}\"")),
                );
                None
            }
            None => {
                if required {
                    self.problem(
                        join(prefix, key),
                        "is missing",
                        Some(format!("add `{key} = \"...\"` to [{prefix}]")),
                    );
                }
                None
            }
        }
    }

    /// A boolean with a default. None only when the value has another type.
    pub fn bool(&mut self, t: &Table, prefix: &str, key: &str, default: bool) -> Option<bool> {
        match t.get(key) {
            Some(toml::Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    join(prefix, key),
                    format!(
                        "must be true or false, not {}",
                        crate::article(other.type_str())
                    ),
                    Some(format!(
                        "write `{key} = true` or `{key} = false` without quotes"
                    )),
                );
                None
            }
            None => Some(default),
        }
    }

    /// An integer: Some(None) when missing, None when of another type.
    pub fn integer(&mut self, t: &Table, prefix: &str, key: &str) -> Option<Option<i64>> {
        match t.get(key) {
            Some(toml::Value::Integer(i)) => Some(Some(*i)),
            Some(other) => {
                self.problem(
                    join(prefix, key),
                    format!(
                        "must be an integer, not {}",
                        crate::article(other.type_str())
                    ),
                    Some(format!("write the number without quotes: {key} = 300")),
                );
                None
            }
            None => Some(None),
        }
    }

    /// An array of strings.
    pub fn string_array(
        &mut self,
        t: &Table,
        prefix: &str,
        key: &str,
        required: bool,
    ) -> Option<Vec<String>> {
        let path = join(prefix, key);
        match t.get(key) {
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => {
                            self.problem(
                                format!("{path}[{i}]"),
                                format!(
                                    "must be a string, not {}",
                                    crate::article(item.type_str())
                                ),
                                Some("quote every argument".into()),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.problem(
                    path,
                    format!(
                        "must be an array of strings, not {}",
                        crate::article(other.type_str())
                    ),
                    Some(format!(
                        "write {key} = [\"/path/to/program\", \"arg\", ...]"
                    )),
                );
                None
            }
            None => {
                if required {
                    self.problem(
                        path,
                        "is missing",
                        Some(format!(
                            "add `{key} = [\"/path/to/program\", ...]` to [{prefix}]"
                        )),
                    );
                }
                None
            }
        }
    }
}
