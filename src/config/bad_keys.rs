//! Every bad key of a table that failed to deserialize. serde stops at a table's first error,
//! so each key is tried again on its own, in a view of the table that shows only that key; a
//! key whose value is itself a failing table or array is taken apart the same way, down to
//! the keys at fault.
//!
//! A trial shows part of the tree, so its struct misses the fields it does not show: a
//! "missing field" from a table shown in part says nothing and passes. That is why the trials
//! deserialize through their own error type rather than toml's: missing fields are told apart
//! by kind, not by the words of a message. Values that are not tables or arrays are handed to
//! toml's own deserializer, so a bad value gets the message a full load would give it.
//!
//! Every child of a failing node gets a trial, so a trial must not cost more than the path to
//! its node and the subtree it shows: the path is followed by lookups, never by passing over
//! siblings. A search then costs about one deserialization of each failing node per failing
//! ancestor, which the schema's depth bounds: linear in the input, however wide its tables.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{Deserializer, Visitor};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

/// One bad key or value, where it is written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadKey {
    pub span: Range<usize>,
    pub message: String,
}

/// The most errors listed for one table. Past a screenful more add little that fixing the first
/// ones would not show, and each costs the caller a search for its place in the file.
pub(super) const MAX_LISTED: usize = 50;

/// Every error that deserializing `value` as a `T` meets, each at its own place, in file order;
/// empty when `T` accepts `value`. Past `MAX_LISTED` errors, the first `MAX_LISTED` and one
/// more at the place of the next, saying how many are not listed.
pub(super) fn bad_keys<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Vec<BadKey> {
    search::<T>(value).0
}

/// `bad_keys`, and the work it took.
fn search<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> (Vec<BadKey>, Work) {
    let mut search = Search {
        root: value,
        found: Vec::new(),
        trials: 0,
        looked_at: Cell::new(0),
    };
    search.explore::<T>(&mut Vec::new());
    let work = Work {
        trials: search.trials,
        looked_at: search.looked_at.get(),
    };
    let mut found = search.found;
    found.sort_by(|a, b| (a.span.start, &a.message).cmp(&(b.span.start, &b.message)));
    found.dedup();
    // One line saying how many are left out takes the room of one more error: list all of a
    // table that has just one more.
    if found.len() > MAX_LISTED + 1 {
        let left_out = found.len() - MAX_LISTED;
        let span = found[MAX_LISTED].span.clone();
        found.truncate(MAX_LISTED);
        found.push(BadKey {
            span,
            message: format!("{left_out}{LEFT_OUT} (at most {MAX_LISTED} are listed per table)"),
        });
    }
    (found, work)
}

/// The words after the count in the line that stands for the errors of a table not listed.
const LEFT_OUT: &str = " more errors in this table from here on are not listed";

impl super::ConfigErrors {
    /// How many errors there are, the ones not listed included (a line saying "N more …"
    /// stands for N of them, not one).
    pub fn total(&self) -> usize {
        self.0
            .iter()
            .map(|error| {
                error
                    .message
                    .split_once(LEFT_OUT)
                    .and_then(|(count, _)| count.parse().ok())
                    .unwrap_or(1)
            })
            .sum()
    }
}

/// What a search cost. Counted so that tests can pin how it grows with the input, which no
/// timing can do reliably: a trial per child of a failing node is linear, and so is the search
/// only if each trial looks at a bounded number of entries besides the subtree it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Work {
    /// Trials run.
    trials: usize,
    /// Table entries and array items the trials looked at, shown or not.
    looked_at: usize,
}

/// A child of a table (its key) or of an array (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The errors found so far under `root`, and the work done to find them.
struct Search<'r, 'i> {
    root: &'r Spanned<DeValue<'i>>,
    found: Vec<BadKey>,
    trials: usize,
    looked_at: Cell<usize>,
}

impl<'r, 'i> Search<'r, 'i> {
    /// Finds the errors under the node at `path`; whether there are any.
    fn explore<T: DeserializeOwned>(&mut self, path: &mut Vec<Step<'r>>) -> bool {
        let Err(failure) = self.trial::<T>(path, &BTreeSet::new()) else {
            return false;
        };
        let Some(node) = self.node_at(path) else {
            self.found.push(failure.into_bad_key(self.root.span()));
            return true;
        };
        // A failure at the node's own span is the node's (a missing field, a table where a
        // string belongs): its children are not at fault, and may be as deep as the input cares
        // to nest.
        let mut bad = BTreeSet::new();
        if failure.span.as_ref() != Some(&node.span()) {
            for step in self.children(node) {
                path.push(step);
                if self.explore::<T>(path) {
                    bad.insert(step);
                }
                path.pop();
            }
        }
        if bad.is_empty() {
            self.found.push(failure.into_bad_key(node.span()));
        } else if let Err(rest) = self.trial::<T>(path, &bad) {
            // What remains wrong with the node once its bad children are out of sight.
            self.found.push(rest.into_bad_key(node.span()));
        }
        true
    }

    /// Deserializes a `T` from the view that shows only `path`, and the node at its end whole
    /// but for the `hidden` children. Missing fields caused by the view pass.
    fn trial<T: DeserializeOwned>(
        &mut self,
        path: &[Step<'_>],
        hidden: &BTreeSet<Step<'_>>,
    ) -> Result<(), TrialError> {
        self.trials += 1;
        let view = View {
            rest: path,
            hidden,
            below: false,
            looked_at: &self.looked_at,
        };
        match T::deserialize(Node {
            value: self.root,
            view,
        }) {
            Ok(_) => Ok(()),
            Err(e) if e.missing == Missing::OutOfView => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The node at the end of `path`, found by a lookup at each step: a search over siblings
    /// here, once per failing node, is quadratic when most children of a wide node fail.
    fn node_at(&self, path: &[Step<'_>]) -> Option<&'r Spanned<DeValue<'i>>> {
        self.looked_at.set(self.looked_at.get() + path.len());
        path.iter()
            .try_fold(self.root, |node, step| match (node.get_ref(), step) {
                (DeValue::Table(table), Step::Key(key)) => table.get(*key),
                (DeValue::Array(items), Step::Index(i)) => items.get(*i),
                _ => None,
            })
    }

    fn children(&self, node: &'r Spanned<DeValue<'i>>) -> Vec<Step<'r>> {
        let steps: Vec<_> = match node.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .map(|(k, _)| Step::Key(k.get_ref().as_ref()))
                .collect(),
            DeValue::Array(items) => (0..items.len()).map(Step::Index).collect(),
            _ => Vec::new(),
        };
        self.looked_at.set(self.looked_at.get() + steps.len());
        steps
    }
}

/// How much of a node a trial shows.
#[derive(Clone, Copy)]
struct View<'a> {
    /// The steps still to take to the node in focus; empty at the focus.
    rest: &'a [Step<'a>],
    /// Children of the node in focus left out.
    hidden: &'a BTreeSet<Step<'a>>,
    /// Under the focus everything shows.
    below: bool,
    /// Counts the entries and items looked at.
    looked_at: &'a Cell<usize>,
}

impl<'a> View<'a> {
    /// The one child shown on the way to the focus; `None` at the focus and under it.
    fn next_step(self) -> Option<Step<'a>> {
        if self.below {
            None
        } else {
            self.rest.first().copied()
        }
    }

    /// The view of a child, or `None` when the child is left out.
    fn child(self, step: Step<'a>) -> Option<Self> {
        if self.below {
            return Some(self);
        }
        match self.rest.split_first() {
            Some((next, rest)) if *next == step => Some(Self { rest, ..self }),
            Some(_) => None,
            None if self.hidden.contains(&step) => None,
            None => Some(Self {
                below: true,
                ..self
            }),
        }
    }

    /// Counts entries or items looked at through this view.
    fn count(self, looked_at: usize) {
        self.looked_at.set(self.looked_at.get() + looked_at);
    }

    /// Whether a field missing from this node's table may only be out of view.
    fn hides(self, field: &str) -> bool {
        !self.below && (!self.rest.is_empty() || self.hidden.contains(&Step::Key(field)))
    }
}

/// A deserializer over one node of the tree, seen through a view.
struct Node<'a, 'i> {
    value: &'a Spanned<DeValue<'i>>,
    view: View<'a>,
}

impl<'a, 'i> Node<'a, 'i> {
    /// Tables and arrays are walked here; other values go to toml whole.
    fn leaf(&self) -> Option<ValueDeserializer<'i>> {
        match self.value.get_ref() {
            DeValue::Table(_) | DeValue::Array(_) => None,
            _ => Some(ValueDeserializer::from(self.value.clone())),
        }
    }

    /// Places an error that has no place yet at this node, and decides whether a missing
    /// field raised by this node's table is real.
    fn place<T>(&self, result: Result<T, TrialError>) -> Result<T, TrialError> {
        result.map_err(|mut e| {
            if let Missing::Unplaced(field) = &e.missing {
                e.missing = if self.view.hides(field) {
                    Missing::OutOfView
                } else {
                    Missing::No
                };
            }
            if e.span.is_none() {
                e.span = Some(self.value.span());
            }
            e
        })
    }
}

/// toml's own deserializer for a value that is not a table or an array.
macro_rules! leaf_or_any {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'i>>(self, visitor: V) -> Result<V::Value, TrialError> {
            match self.leaf() {
                Some(leaf) => self.place(leaf.$method(visitor).map_err(TrialError::from)),
                None => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'a, 'i> Deserializer<'i> for Node<'a, 'i> {
    type Error = TrialError;

    fn deserialize_any<V: Visitor<'i>>(self, visitor: V) -> Result<V::Value, TrialError> {
        let result = match self.value.get_ref() {
            DeValue::Table(table) => {
                // On the way to the focus only the next step shows: it is looked up, since
                // passing over every sibling on every trial makes the search quadratic.
                let looked_at: Vec<_> = match self.view.next_step() {
                    Some(Step::Key(key)) => table.get_key_value(key).into_iter().collect(),
                    Some(Step::Index(_)) => Vec::new(),
                    None => table.iter().collect(),
                };
                self.view.count(looked_at.len());
                let entries = looked_at
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let step = Step::Key(key.get_ref().as_ref());
                        Some((
                            key,
                            Node {
                                value,
                                view: self.view.child(step)?,
                            },
                        ))
                    })
                    .collect::<Vec<_>>();
                visitor.visit_map(Entries {
                    entries: entries.into_iter(),
                    next: None,
                })
            }
            DeValue::Array(items) => {
                let looked_at: Vec<_> = match self.view.next_step() {
                    Some(Step::Index(i)) => {
                        items.get(i).map(|item| (i, item)).into_iter().collect()
                    }
                    Some(Step::Key(_)) => Vec::new(),
                    None => items.iter().enumerate().collect(),
                };
                self.view.count(looked_at.len());
                let items = looked_at
                    .into_iter()
                    .filter_map(|(i, value)| {
                        Some(Node {
                            value,
                            view: self.view.child(Step::Index(i))?,
                        })
                    })
                    .collect::<Vec<_>>();
                visitor.visit_seq(Items {
                    items: items.into_iter(),
                })
            }
            _ => match self.leaf() {
                Some(leaf) => leaf.deserialize_any(visitor).map_err(TrialError::from),
                None => Err(de::Error::custom("unreachable value kind")),
            },
        };
        self.place(result)
    }

    fn deserialize_option<V: Visitor<'i>>(self, visitor: V) -> Result<V::Value, TrialError> {
        // A value that is present is `Some`; absent keys never reach a deserializer.
        let value = self.value;
        let view = self.view;
        self.place(visitor.visit_some(Node { value, view }))
    }

    fn deserialize_newtype_struct<V: Visitor<'i>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        match self.leaf() {
            Some(leaf) => self.place(
                leaf.deserialize_newtype_struct(name, visitor)
                    .map_err(TrialError::from),
            ),
            None => {
                let (value, view) = (self.value, self.view);
                self.place(visitor.visit_newtype_struct(Node { value, view }))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'i>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        if let Some(leaf) = self.leaf() {
            return self.place(
                leaf.deserialize_struct(name, fields, visitor)
                    .map_err(TrialError::from),
            );
        }
        if serde_spanned::de::is_spanned(name) {
            let span = self.value.span();
            let (value, view) = (self.value, self.view);
            let spanned = serde_spanned::de::SpannedDeserializer::new(Node { value, view }, span);
            return self.place(visitor.visit_map(spanned));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'i>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        // Enums are chosen by a string or a one-key table: nothing in them to take apart.
        let whole = ValueDeserializer::from(self.value.clone());
        self.place(
            whole
                .deserialize_enum(name, variants, visitor)
                .map_err(TrialError::from),
        )
    }

    leaf_or_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'i>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        match self.leaf() {
            Some(leaf) => self.place(
                leaf.deserialize_unit_struct(name, visitor)
                    .map_err(TrialError::from),
            ),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'i>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        match self.leaf() {
            Some(leaf) => self.place(
                leaf.deserialize_tuple(len, visitor)
                    .map_err(TrialError::from),
            ),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'i>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TrialError> {
        match self.leaf() {
            Some(leaf) => self.place(
                leaf.deserialize_tuple_struct(name, len, visitor)
                    .map_err(TrialError::from),
            ),
            None => self.deserialize_any(visitor),
        }
    }
}

impl<'a, 'i> IntoDeserializer<'i, TrialError> for Node<'a, 'i> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// The shown entries of a table.
struct Entries<'a, 'i> {
    entries: std::vec::IntoIter<(&'a Spanned<toml::de::DeString<'i>>, Node<'a, 'i>)>,
    next: Option<Node<'a, 'i>>,
}

impl<'a, 'i> MapAccess<'i> for Entries<'a, 'i> {
    type Error = TrialError;

    fn next_key_seed<K: DeserializeSeed<'i>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TrialError> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        self.next = Some(node);
        let name: &str = key.get_ref().as_ref();
        seed.deserialize(name.into_deserializer())
            .map(Some)
            // An unknown field is the key's fault: point at the key.
            .map_err(|e: TrialError| e.or_at(key.span()))
    }

    fn next_value_seed<V: DeserializeSeed<'i>>(&mut self, seed: V) -> Result<V::Value, TrialError> {
        match self.next.take() {
            Some(node) => {
                let span = node.value.span();
                seed.deserialize(node).map_err(|e| e.or_at(span))
            }
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The shown items of an array.
struct Items<'a, 'i> {
    items: std::vec::IntoIter<Node<'a, 'i>>,
}

impl<'a, 'i> SeqAccess<'i> for Items<'a, 'i> {
    type Error = TrialError;

    fn next_element_seed<T: DeserializeSeed<'i>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TrialError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let span = node.value.span();
        seed.deserialize(node).map(Some).map_err(|e| e.or_at(span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// What a missing-field error means in a trial.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Missing {
    /// Not a missing field, or one that is really missing from the file.
    No,
    /// Raised by a struct, not yet placed at the table it is missing from.
    Unplaced(String),
    /// Left out by the trial's view: not an error.
    OutOfView,
}

#[derive(Debug)]
struct TrialError {
    message: String,
    span: Option<Range<usize>>,
    missing: Missing,
}

impl TrialError {
    /// Errors raised after a value was read (a duration that does not parse) belong to it.
    fn or_at(mut self, span: Range<usize>) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    fn into_bad_key(self, fallback: Range<usize>) -> BadKey {
        BadKey {
            span: self.span.unwrap_or(fallback),
            message: self.message,
        }
    }
}

impl From<toml::de::Error> for TrialError {
    fn from(e: toml::de::Error) -> Self {
        Self {
            message: e.message().to_owned(),
            span: e.span(),
            missing: Missing::No,
        }
    }
}

impl fmt::Display for TrialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TrialError {}

impl de::Error for TrialError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            message: msg.to_string(),
            span: None,
            missing: Missing::No,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            message: format!("missing field `{field}`"),
            span: None,
            missing: Missing::Unplaced(field.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use toml::de::DeTable;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        count: u32,
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        spanned: Option<Spanned<Inner>>,
        #[serde(default)]
        tags: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        required: String,
        #[serde(default)]
        number: u32,
    }

    fn searched(text: &str) -> (Vec<BadKey>, Work) {
        let root = DeTable::parse(text).expect("test input is TOML");
        let span = root.span();
        let value = Spanned::new(span, DeValue::Table(root.into_inner()));
        search::<Outer>(&value)
    }

    /// Each bad key as (the text at its place, the start of its message).
    fn bad(text: &str) -> Vec<(String, String)> {
        searched(text)
            .0
            .into_iter()
            .map(|b| (text[b.span].to_owned(), b.message))
            .collect()
    }

    fn assert_bad(text: &str, expected: &[(&str, &str)]) {
        let found = bad(text);
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for ((place, message), (want_place, want_message)) in found.iter().zip(expected) {
            assert_eq!(place, want_place, "{found:#?}");
            assert!(
                message.starts_with(want_message),
                "{message:?} should start {want_message:?}"
            );
        }
    }

    #[test]
    fn a_good_table_has_no_bad_keys() {
        assert_bad(
            "name = \"n\"\ncount = 3\ninner = { required = \"r\" }\nlist = [{ required = \"a\", number = 1 }]",
            &[],
        );
    }

    #[test]
    fn every_bad_key_of_a_table_is_found_at_its_place() {
        assert_bad(
            "name = 5\ncount = \"x\"\ncolour = 1",
            &[
                ("5", "invalid type: integer `5`, expected a string"),
                ("\"x\"", "invalid type: string \"x\", expected u32"),
                ("colour", "unknown field `colour`, expected one of `name`"),
            ],
        );
    }

    #[test]
    fn nested_tables_are_taken_apart_down_to_their_keys() {
        assert_bad(
            "name = \"n\"\n[inner]\nrequired = 1\nnumber = \"x\"\nshade = 2",
            &[
                ("1", "invalid type: integer `1`"),
                ("\"x\"", "invalid type: string \"x\""),
                ("shade", "unknown field `shade`"),
            ],
        );
        assert_bad(
            "name = \"n\"\nspanned = { required = 1, number = \"x\" }",
            &[
                ("1", "invalid type: integer `1`"),
                ("\"x\"", "invalid type: string \"x\""),
            ],
        );
    }

    #[test]
    fn array_items_are_taken_apart_one_by_one() {
        assert_bad(
            "name = \"n\"\nlist = [{ required = \"a\" }, { required = 1, number = \"x\" }, 7]",
            &[
                ("1", "invalid type: integer `1`"),
                ("\"x\"", "invalid type: string \"x\""),
                ("7", "invalid type: integer `7`, expected struct Inner"),
            ],
        );
    }

    #[test]
    fn a_field_missing_from_the_file_is_an_error_beside_bad_keys() {
        assert_bad(
            "name = \"n\"\n[inner]\nnumber = \"x\"",
            &[
                ("[inner]", "missing field `required`"),
                ("\"x\"", "invalid type: string \"x\""),
            ],
        );
        assert_bad(
            "name = \"n\"\ninner = { number = \"x\" }",
            &[
                ("{ number = \"x\" }", "missing field `required`"),
                ("\"x\"", "invalid type: string \"x\""),
            ],
        );
    }

    #[test]
    fn a_bad_required_key_is_not_also_missing() {
        assert_bad(
            "name = \"n\"\ninner = { required = 5 }",
            &[("5", "invalid type: integer `5`")],
        );
        assert_bad("name = []", &[("[]", "invalid type: sequence")]);
    }

    #[test]
    fn a_table_where_a_value_belongs_is_one_error() {
        assert_bad(
            "name = { a = 1, b = { c = [1, 2] } }",
            &[(
                "{ a = 1, b = { c = [1, 2] } }",
                "invalid type: map, expected a string",
            )],
        );
    }

    /// `good` good items in `list`, then `bad` bad ones.
    fn wide_array(good: usize, bad: usize) -> String {
        let good = "{ required = \"a\" }, ".repeat(good);
        let bad = "{ required = 1 }, ".repeat(bad);
        format!("name = \"n\"\nlist = [{good}{bad}]")
    }

    /// `good` good entries in `tags`, then `bad` bad ones.
    fn wide_table(good: usize, bad: usize) -> String {
        let entries: String = (0..good + bad)
            .map(|i| match i < good {
                true => format!("t{i:05} = \"v\"\n"),
                false => format!("t{i:05} = 1\n"),
            })
            .collect();
        format!("name = \"n\"\n[tags]\n{entries}")
    }

    type Wide = fn(usize, usize) -> String;

    #[test]
    fn the_search_grows_linearly_with_the_width_of_a_table_or_array() {
        for wide in [wide_array as Wide, wide_table] {
            let (found, small) = searched(&wide(400, 1));
            let (_, large) = searched(&wide(800, 1));
            assert_eq!(found.len(), 1, "{found:#?}");
            assert_eq!(&wide(400, 1)[found[0].span.clone()], "1");
            assert_linear(small, large);
        }
    }

    /// Twice the input cost at most twice the work (plus a little): a quadratic search would
    /// take four times as much.
    fn assert_linear(small: Work, large: Work) {
        assert!(
            large.trials <= 2 * small.trials + 10,
            "{small:?} then {large:?}"
        );
        assert!(
            large.looked_at <= 2 * small.looked_at + 10,
            "{small:?} then {large:?}"
        );
    }

    #[test]
    fn the_search_grows_linearly_with_the_number_of_bad_entries() {
        for wide in [wide_array as Wide, wide_table] {
            let (_, small) = searched(&wide(0, 400));
            let (_, large) = searched(&wide(0, 800));
            assert_linear(small, large);
        }
    }

    #[test]
    fn a_table_with_very_many_errors_lists_the_first_and_how_many_more() {
        for wide in [wide_array as Wide, wide_table] {
            let text = wide(3, 200);
            let found = bad(&text);
            assert_eq!(found.len(), MAX_LISTED + 1, "{found:#?}");
            for (place, message) in &found[..MAX_LISTED] {
                assert_eq!(place, "1");
                assert!(
                    message.starts_with("invalid type: integer `1`"),
                    "{message}"
                );
            }
            let (place, message) = &found[MAX_LISTED];
            assert_eq!(place, "1");
            assert_eq!(
                message,
                "150 more errors in this table from here on are not listed \
                 (at most 50 are listed per table)"
            );
            // It is the 51st error's place, not any other one.
            let (all, _) = searched(&text);
            let next = &searched(&wide(3, MAX_LISTED + 1)).0[MAX_LISTED];
            assert_eq!(all[MAX_LISTED].span, next.span);
        }
    }

    #[test]
    fn one_error_more_than_are_listed_is_listed_too() {
        for wide in [wide_array as Wide, wide_table] {
            let found = bad(&wide(0, MAX_LISTED + 1));
            assert_eq!(found.len(), MAX_LISTED + 1, "{found:#?}");
            assert!(
                found
                    .iter()
                    .all(|(_, message)| message.starts_with("invalid type")),
                "{found:#?}"
            );
        }
    }
}
