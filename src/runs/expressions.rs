//! Step conditions (`executeIf`) and input templates (`{{ expr }}`), in CEL.
//!
//! # What expressions see
//!
//! Three variables, from a [`Scope`]: `inputs` (the run's inputs object), `steps` (step id →
//! `{"status", "output"}` of the earlier steps) and `run` (`{"id", "flowId"}`). Any other name
//! is refused when the expression is compiled, except the variable a macro such as
//! `map(x, …)` binds, inside that macro, and CEL's type names (`int`, `string`, …). The
//! language is CEL's standard library with the standard macros (`has`, `all`, `exists`,
//! `exists_one`, `map`, `filter`) and optional values (`inputs.?x.orValue(1)`); regular
//! expressions, timestamps, durations and the extension libraries are not there.
//!
//! JSON becomes CEL and back like this: integers that fit an `i64` are `int`, larger ones
//! that fit a `u64` are `uint`, every other number is a `double` (so integers beyond 64 bits
//! are approximated, and a number beyond the range of a double becomes an infinity, which
//! cannot be turned back into JSON). Back to JSON, `int` and `uint` are JSON integers, a
//! `double` a JSON number (`2.0`), a map must have string keys (its keys are written sorted),
//! a type value such as `type(1)` is its name; bytes, optional values (unwrap them with
//! `.orValue(…)` or `.value()`) and infinities or NaN have no JSON form and are errors. A
//! macro over a map sees its keys in no particular order (CEL leaves it unspecified, and the
//! interpreter's maps are hash maps): `m.map(k, k)` may list them differently from one
//! evaluation to the next.
//!
//! # Templates
//!
//! [`Template`] applies to a JSON value (a step's `inputs`): only strings are templated,
//! inside arrays and objects at any depth; object keys are kept as written.
//!
//! - A string without `{{` is kept as is.
//! - A string that starts with `{{` and ends with the `}}` closing it, with no other
//!   template, is *exact*: it becomes the JSON value of the expression, of whatever type
//!   (`"{{ inputs.n }}"` is the number, `"{{ steps.fetch.output.body }}"` the object).
//!   Whitespace outside the braces makes it text: `" {{ inputs.n }}"` is a string.
//! - Otherwise every `{{ expr }}` is replaced by its value as text: a string bare, anything
//!   else as compact JSON (`"n={{ inputs.n }}"` is `"n=3"`, a list is `[1,2]`, null `null`).
//!
//! A template ends at the first `}}` that is outside the expression's brackets, string
//! literals and `//` comments, so `{{ {"a": {"b": 1}} }}` and `{{ "}}" }}` work. There is no
//! escape syntax: a literal `{{` is written as an expression, `{{ '{{' }}`. A `{{` without its
//! `}}`, an empty `{{ }}` or a bad expression is a compile error naming the JSON path of the
//! string (`body.user.name`, `query.ids[2]`, `headers["X-Trace"]`; empty for the value itself).
//!
//! # Bounded cost
//!
//! The `cel` crate (0.15) has no cost tracking of its own, so every expression is bounded
//! twice. When it is compiled, by its shape:
//!
//! - at most [`MAX_SOURCE_BYTES`] (2048) bytes of source;
//! - brackets nested at most [`MAX_DEPTH`] (32) deep, checked by a scan before the parser
//!   runs, and a syntax tree at most [`MAX_DEPTH`] levels deep and [`MAX_NODES`] (256) nodes
//!   big once the macros are expanded;
//! - no macro (`map`, `filter`, `all`, `exists`, `exists_one`) inside the body of another:
//!   each body runs once per element of its range, so the work stays linear in the data (a
//!   chain such as `l.filter(…).map(…)` is fine: a range is evaluated once);
//! - no message construction (`Foo{a: 1}`), no unknown names.
//!
//! When it is evaluated, by the data it meets: before anything runs, an upper bound of what
//! the expression can cost with this scope is worked out from its syntax tree and the sizes
//! of the values it names (each node's result is bounded by the sizes of its operands, a
//! macro's cost by its range's length times its body's cost), in units of about a byte of
//! data (a string is 8 plus its length, any other scalar 8, each node 16). Over [`MAX_COST`]
//! (16 Mi units) the expression is refused with an error saying so; each
//! [`Expression::evaluate`] or [`Expression::condition`] has that budget, and all the
//! templates of one [`Template::render`] share one. The bound is pessimistic by a small
//! factor (a `filter` then `map` over a list of about 1 MB of small objects comes to 14 Mi);
//! expressions at the limit measured about 50 MB of memory and 60 ms in a release build.
//! This is what keeps memory bounded:
//! the interpreter copies a value each time it puts it in a list or map or binds it to a
//! macro variable, so `[steps, steps, …]` or `items.map(x, inputs)` would otherwise grow with
//! the data times the expression. Only the parts of `inputs`, `steps` and `run` an expression
//! names are handed to the interpreter, so a step does not pay for the outputs it does not
//! use. CEL itself has no loops, recursion or functions that grow values (no string
//! repetition, no `range`), `+` on strings and lists is covered by the bound, and the result
//! is turned into JSON under the same budget.
//!
//! Parsing and evaluation run on a thread of their own with a 32 MiB stack, joined before
//! the call returns: the parser and the interpreter recurse deeply per nesting level (the
//! parser's frames exceed 150 KiB per bracket level in a debug build, so a 2 MiB stack
//! overflows at a dozen levels, which is an abort, not a panic), and a panic in them, which
//! fuzzing did not produce, comes back as an [`ExpressionError`] instead of unwinding into the
//! caller. The calls are synchronous and CPU-bound (bounded as above): from async code call
//! them directly for one step's expressions, or through `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{operators, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelOptional, CelString,
    CelType, CelUInt, Kind,
};
use cel::common::value::Val;
use cel::objects::Value as CelValue;
use cel::{Context, Env, ExecutionError, ParseErrors};
use serde_json::{Map, Number, Value as Json};

/// The longest source an expression may have, in bytes: a condition, or the text between a
/// template's `{{` and `}}`.
pub const MAX_SOURCE_BYTES: usize = 2048;

/// How deeply an expression may nest: brackets in its source, and levels of its syntax tree
/// once the macros are expanded.
pub const MAX_DEPTH: usize = 32;

/// The most nodes an expression's syntax tree may have once the macros are expanded.
pub const MAX_NODES: usize = 256;

/// The most one evaluation may cost, in units of about a byte of data: an
/// [`Expression::evaluate`] or [`Expression::condition`], or a whole [`Template::render`].
pub const MAX_COST: u64 = 16 * 1024 * 1024;

// Above MAX_DEPTH so that a source too deep for us is reported in our words by the
// pre-scan or the tree check; the parser's own limit is a last line.
const PARSER_RECURSION_LIMIT: u16 = 48;

// Measured: a debug build needs about 6 MiB for MAX_DEPTH nested brackets, a release build
// far less; the rest is margin. Only the pages touched are committed.
const STACK_BYTES: usize = 32 * 1024 * 1024;

// The cost units of a scalar and of one node of the tree.
const SCALAR: u64 = 8;
const NODE: u64 = 16;

// JSON nested deeper than this is refused rather than converted (serde_json itself stops
// parsing at 128).
const MAX_VALUE_DEPTH: usize = 512;

// The type names CEL resolves as identifiers (`type(x) == int`).
const TYPE_NAMES: [&str; 11] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional_type",
    "string",
    "type",
    "uint",
];

// The qualified functions of the `optional` namespace, called as `optional.of(x)`.
const OPTIONAL_FUNCTIONS: [&str; 3] = ["none", "of", "ofNonZeroValue"];

// Calls whose result is a scalar whatever their operands' sizes.
const SCALAR_CALLS: [&str; 24] = [
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::IN,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::NEGATE,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::NOT_STRICTLY_FALSE,
    "size",
    "int",
    "uint",
    "double",
    "bool",
    "contains",
    "startsWith",
    "endsWith",
];

// The accumulator the standard macros bind; `@` cannot be written in CEL source.
const ACCUMULATOR: &str = "@result";

/// Why an expression could not be compiled or evaluated; its `Display` says why in words a
/// flow author understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpressionError {
    message: String,
}

impl ExpressionError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExpressionError {}

/// Why a [`Template`] could not be compiled or rendered: which string, and why. Its `Display`
/// is `<path>: <why>`, or just `<why>` when the template is the value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Where the string is in the templated value: `body.user.name`, `query.ids[2]`,
    /// `headers["X-Trace"]`; empty when it is the value itself.
    pub path: String,
    /// What is wrong with the expression there.
    pub error: ExpressionError,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.path, self.error)
        }
    }
}

impl std::error::Error for TemplateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What expressions see: `inputs` (the run's inputs object), `steps` (step id →
/// `{"status", "output"}` of earlier steps), `run` (`{"id", "flowId"}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    /// The run's inputs, as given.
    pub inputs: Json,
    /// Step id → `{"status", "output"}`, for the steps before the current one.
    pub steps: Json,
    /// `{"id", "flowId"}` of the run.
    pub run: Json,
}

impl Scope {
    fn root(&self, root: Root) -> &Json {
        match root {
            Root::Inputs => &self.inputs,
            Root::Steps => &self.steps,
            Root::Run => &self.run,
        }
    }
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expression {
    source: String,
    ast: IdedExpr,
    // Every use of `inputs`, `steps` or `run`, for the cost bound and for error messages.
    sites: Vec<Site>,
    // What of the scope the expression can reach.
    needs: Needs,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl Expression {
    /// Compiles `source`, checking its syntax, its names and the limits on its shape (see the
    /// module documentation).
    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        prescan(source)?;
        on_big_stack(|| compile_checked(source))?
    }

    /// The source the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `scope` into a JSON value.
    pub fn evaluate(&self, scope: &Scope) -> Result<Json, ExpressionError> {
        let mut values = on_big_stack(|| evaluate_all(&[self], scope))?.map_err(|(_, e)| e)?;
        Ok(values.pop().unwrap_or(Json::Null))
    }

    /// A condition (`executeIf`): must evaluate to a bool, anything else is an error.
    pub fn condition(&self, scope: &Scope) -> Result<bool, ExpressionError> {
        match self.evaluate(scope)? {
            Json::Bool(holds) => Ok(holds),
            other => Err(ExpressionError::new(format!(
                "a condition must be true or false, but this one is {}",
                describe_json(&other)
            ))),
        }
    }
}

/// A JSON value whose strings may hold `{{ expr }}` templates, compiled once.
#[derive(Clone, Debug)]
pub struct Template {
    node: Node,
    // The path of each expression, in the order `render` evaluates them.
    paths: Vec<String>,
}

#[derive(Clone, Debug)]
enum Node {
    // Nothing templated below: kept as is.
    Literal(Json),
    // An exact template: the expression's value.
    Exact(Expression),
    // Text with templates in it.
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Expression(Expression),
}

impl Template {
    /// Compiles every template in the value; the error names the JSON path of the bad string
    /// (`body.user.name`) and says what is wrong with it.
    pub fn compile(value: &Json) -> Result<Self, TemplateError> {
        let root = |error| TemplateError {
            path: String::new(),
            error,
        };
        on_big_stack(|| {
            let mut paths = Vec::new();
            let node = compile_node(value, &mut Vec::new(), &mut paths)?;
            Ok(Template { node, paths })
        })
        .map_err(root)?
    }

    /// Renders the value: every template replaced by its expression's value in `scope`. The
    /// expressions share one cost budget; the first that fails fails the render, naming its
    /// path.
    pub fn render(&self, scope: &Scope) -> Result<Json, TemplateError> {
        if let Node::Literal(value) = &self.node {
            return Ok(value.clone());
        }
        let root = |error| TemplateError {
            path: String::new(),
            error,
        };
        on_big_stack(|| {
            let mut expressions = Vec::with_capacity(self.paths.len());
            self.node.expressions(&mut expressions);
            let values =
                evaluate_all(&expressions, scope).map_err(|(index, error)| TemplateError {
                    path: self.paths.get(index).cloned().unwrap_or_default(),
                    error,
                })?;
            Ok(self.node.assemble(&mut values.into_iter()))
        })
        .map_err(root)?
    }
}

impl Node {
    fn expressions<'a>(&'a self, into: &mut Vec<&'a Expression>) {
        match self {
            Node::Literal(_) => {}
            Node::Exact(expression) => into.push(expression),
            Node::Text(pieces) => {
                for piece in pieces {
                    if let Piece::Expression(expression) = piece {
                        into.push(expression);
                    }
                }
            }
            Node::Array(items) => items.iter().for_each(|item| item.expressions(into)),
            Node::Object(entries) => entries.iter().for_each(|(_, v)| v.expressions(into)),
        }
    }

    // Builds the rendered value from the expressions' values, in `expressions` order.
    fn assemble(&self, values: &mut impl Iterator<Item = Json>) -> Json {
        match self {
            Node::Literal(value) => value.clone(),
            Node::Exact(_) => values.next().unwrap_or(Json::Null),
            Node::Text(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(literal) => text.push_str(literal),
                        Piece::Expression(_) => match values.next() {
                            Some(Json::String(s)) => text.push_str(&s),
                            Some(other) => text.push_str(&other.to_string()),
                            None => {}
                        },
                    }
                }
                Json::String(text)
            }
            Node::Array(items) => Json::Array(items.iter().map(|i| i.assemble(values)).collect()),
            Node::Object(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(key, node)| (key.clone(), node.assemble(values)))
                    .collect(),
            ),
        }
    }
}

fn compile_node(
    value: &Json,
    path: &mut Vec<Seg>,
    paths: &mut Vec<String>,
) -> Result<Node, TemplateError> {
    let failed = |path: &[Seg], error| TemplateError {
        path: format_path(None, path),
        error,
    };
    Ok(match value {
        Json::String(text) => match split_template(text).map_err(|e| failed(path, e))? {
            None => Node::Literal(value.clone()),
            Some(pieces) => {
                let mut compiled = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    compiled.push(match piece {
                        Split::Text(text) => Piece::Text(text.to_owned()),
                        Split::Expression(source) => {
                            prescan(source).map_err(|e| failed(path, e))?;
                            paths.push(format_path(None, path));
                            Piece::Expression(compile_checked(source).map_err(|e| failed(path, e))?)
                        }
                    });
                }
                match <[Piece; 1]>::try_from(compiled) {
                    Ok([Piece::Expression(expression)]) => Node::Exact(expression),
                    Ok([piece]) => Node::Text(vec![piece]),
                    Err(pieces) => Node::Text(pieces),
                }
            }
        },
        Json::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push(Seg::Index(index as i64));
                nodes.push(compile_node(item, path, paths)?);
                path.pop();
            }
            if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Array(nodes)
            }
        }
        Json::Object(entries) => {
            let mut nodes = Vec::with_capacity(entries.len());
            for (key, item) in entries {
                path.push(Seg::Key(key.clone()));
                nodes.push((key.clone(), compile_node(item, path, paths)?));
                path.pop();
            }
            if nodes.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
                Node::Literal(value.clone())
            } else {
                Node::Object(nodes)
            }
        }
        _ => Node::Literal(value.clone()),
    })
}

enum Split<'a> {
    Text(&'a str),
    Expression(&'a str),
}

// The pieces of a string with templates, or `None` when it has none.
fn split_template(text: &str) -> Result<Option<Vec<Split<'_>>>, ExpressionError> {
    if !text.contains("{{") {
        return Ok(None);
    }
    let mut pieces = Vec::new();
    let mut rest = 0;
    while let Some(found) = text[rest..].find("{{") {
        let open = rest + found;
        if open > rest {
            pieces.push(Split::Text(&text[rest..open]));
        }
        let start = open + 2;
        let Some(end) = template_end(text, start) else {
            return Err(ExpressionError::new(
                "`{{` is not closed by `}}` (write a literal `{{` as {{ '{{' }})",
            ));
        };
        pieces.push(Split::Expression(&text[start..end]));
        rest = end + 2;
    }
    if rest < text.len() {
        pieces.push(Split::Text(&text[rest..]));
    }
    Ok(Some(pieces))
}

// Where the `}}` closing a template whose expression starts at `start` is: the first one
// outside brackets, string literals and comments.
fn template_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut end = None;
    scan(bytes, start, |at, byte| match byte {
        b'(' | b'[' | b'{' => {
            depth += 1;
            true
        }
        b'}' if depth == 0 && bytes.get(at + 1) == Some(&b'}') => {
            end = Some(at);
            false
        }
        b')' | b']' | b'}' => {
            depth = depth.saturating_sub(1);
            true
        }
        _ => true,
    });
    end
}

// Refuses a source too long, empty or nested too deeply, before the parser sees it.
fn prescan(source: &str) -> Result<(), ExpressionError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(ExpressionError::new(format!(
            "the expression is {} bytes long, more than the {MAX_SOURCE_BYTES} allowed",
            source.len()
        )));
    }
    if source.trim().is_empty() {
        return Err(ExpressionError::new("the expression is empty"));
    }
    let mut depth = 0usize;
    let mut deepest = 0usize;
    scan(source.as_bytes(), 0, |_, byte| {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        true
    });
    if deepest > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(())
}

// Calls `visit` with the position of every ASCII punctuation byte of CEL source from
// `start` that is outside string and bytes literals and `//` comments, until it returns
// false or the source ends (an unterminated literal ends it too).
fn scan(bytes: &[u8], start: usize, mut visit: impl FnMut(usize, u8) -> bool) {
    let mut at = start;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte.is_ascii_alphabetic() || byte == b'_' {
            let word_end = at
                + bytes[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
            let word = &bytes[at..word_end];
            let is_prefix = word.len() <= 2
                && word.iter().all(|b| b"rRbB".contains(b))
                && !(word.len() == 2 && word[0].eq_ignore_ascii_case(&word[1]));
            at = match bytes.get(word_end) {
                Some(b'"' | b'\'') if is_prefix => {
                    let raw = word.iter().any(|b| b.eq_ignore_ascii_case(&b'r'));
                    match skip_string(bytes, word_end, raw) {
                        Some(next) => next,
                        None => return,
                    }
                }
                _ => word_end,
            };
        } else if byte == b'"' || byte == b'\'' {
            at = match skip_string(bytes, at, false) {
                Some(next) => next,
                None => return,
            };
        } else if byte == b'/' && bytes.get(at + 1) == Some(&b'/') {
            at += bytes[at..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(bytes.len() - at);
        } else {
            if byte.is_ascii_punctuation() && !visit(at, byte) {
                return;
            }
            at += 1;
        }
    }
}

// The position after the string literal whose opening quote is at `at`, or `None` when it
// is not closed.
fn skip_string(bytes: &[u8], at: usize, raw: bool) -> Option<usize> {
    let quote = bytes[at];
    let triple = bytes.get(at..at + 3) == Some(&[quote, quote, quote][..]);
    let mut i = at + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if !raw && bytes[i] == b'\\' {
            i += 2;
        } else if triple {
            if bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]) {
                return Some(i + 3);
            }
            i += 1;
        } else if bytes[i] == quote {
            return Some(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

fn too_deep() -> ExpressionError {
    ExpressionError::new(format!(
        "the expression is nested too deeply (at most {MAX_DEPTH} levels)"
    ))
}

fn env() -> &'static Arc<Env> {
    static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));
    &ENV
}

// Runs `work` on a thread with a stack big enough for the parser and the interpreter, and
// waits for it; a panic there comes back as an error.
fn on_big_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, ExpressionError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("expressions".to_owned())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|e| {
                ExpressionError::new(format!("could not start evaluating the expression: {e}"))
            })?;
        handle.join().map_err(|_| {
            ExpressionError::new("the expression evaluator failed unexpectedly (an internal error)")
        })
    })
}

// Parses and checks `source`; runs on the big stack, after `prescan`.
fn compile_checked(source: &str) -> Result<Expression, ExpressionError> {
    let ast = env()
        .parser()
        .max_recursion_depth(PARSER_RECURSION_LIMIT)
        .parse(source)
        .map_err(|errors| ExpressionError::new(describe_parse_errors(&errors)))?;
    let mut checker = Checker::default();
    checker.check(&ast, 1, None)?;
    Ok(Expression {
        source: source.to_owned(),
        ast,
        sites: checker.sites,
        needs: checker.needs,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Root {
    Inputs,
    Steps,
    Run,
}

impl Root {
    fn of(name: &str) -> Option<Self> {
        match name {
            "inputs" => Some(Root::Inputs),
            "steps" => Some(Root::Steps),
            "run" => Some(Root::Run),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Root::Inputs => "inputs",
            Root::Steps => "steps",
            Root::Run => "run",
        }
    }
}

// One step of a path: a map key, or a list index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(i64),
}

// A path from `inputs`, `steps` or `run` written out in the expression, with only fields
// and literal indexes: `steps.fetch.output.body["id"]`. With `presence`, it is the operand
// of `has(….presence)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Site {
    root: Root,
    path: Vec<Seg>,
    presence: Option<String>,
}

// What of a value an expression can reach.
#[derive(Clone, Debug)]
enum Need {
    // Only whether it is there (`has`).
    Present,
    // All of it.
    Whole,
    // The named keys of a map (anything else is needed whole).
    Keys(BTreeMap<String, Need>),
}

#[derive(Clone, Debug, Default)]
struct Needs {
    roots: BTreeMap<Root, Need>,
}

impl Needs {
    fn add(&mut self, site: &Site) {
        let mut need = self.roots.entry(site.root).or_insert(Need::Present);
        for seg in &site.path {
            let Seg::Key(key) = seg else {
                // lists are handed over whole
                *need = Need::Whole;
                return;
            };
            match need {
                Need::Whole => return,
                Need::Present => *need = Need::Keys(BTreeMap::new()),
                Need::Keys(_) => {}
            }
            let Need::Keys(keys) = need else { return };
            need = keys.entry(key.clone()).or_insert(Need::Present);
        }
        match &site.presence {
            None => *need = Need::Whole,
            Some(field) => {
                if let Need::Present = need {
                    *need = Need::Keys(BTreeMap::new());
                }
                if let Need::Keys(keys) = need {
                    keys.entry(field.clone()).or_insert(Need::Present);
                }
            }
        }
    }

    fn merge(&mut self, other: &Needs) {
        fn merge(into: &mut Need, from: &Need) {
            match (&mut *into, from) {
                (Need::Whole, _) | (_, Need::Present) => {}
                (_, Need::Whole) => *into = Need::Whole,
                (Need::Present, Need::Keys(_)) => *into = from.clone(),
                (Need::Keys(mine), Need::Keys(theirs)) => {
                    for (key, need) in theirs {
                        match mine.get_mut(key) {
                            Some(existing) => merge(existing, need),
                            None => {
                                mine.insert(key.clone(), need.clone());
                            }
                        }
                    }
                }
            }
        }
        for (root, need) in &other.roots {
            match self.roots.get_mut(root) {
                Some(existing) => merge(existing, need),
                None => {
                    self.roots.insert(*root, need.clone());
                }
            }
        }
    }
}

// `e` as a site, when it is a path from `inputs`, `steps` or `run` not shadowed by the
// macro variable `shadow`; with the number of tree nodes it spans.
fn as_site(e: &IdedExpr, shadow: Option<&str>) -> Option<(Site, usize)> {
    let (root, path, nodes) = site_path(e, shadow)?;
    Some((
        Site {
            root,
            path,
            presence: None,
        },
        nodes,
    ))
}

// The root, the path from it, and the node count of a site.
fn site_path(e: &IdedExpr, shadow: Option<&str>) -> Option<(Root, Vec<Seg>, usize)> {
    match &e.expr {
        Expr::Ident(name) if Some(name.as_str()) != shadow => {
            Root::of(name).map(|root| (root, Vec::new(), 1))
        }
        Expr::Select(select) if !select.test => {
            let (root, mut path, nodes) = site_path(&select.operand, shadow)?;
            path.push(Seg::Key(select.field.clone()));
            Some((root, path, nodes + 1))
        }
        Expr::Call(call) if call.target.is_none() && call.args.len() == 2 => {
            let seg = match (call.func_name.as_str(), &call.args[1].expr) {
                (operators::INDEX | operators::OPT_INDEX, Expr::Literal(literal)) => {
                    match literal {
                        LiteralValue::String(key) => Seg::Key(key.inner().to_owned()),
                        LiteralValue::Int(index) => Seg::Index(*index.inner()),
                        LiteralValue::UInt(index) => {
                            Seg::Index(i64::try_from(*index.inner()).ok()?)
                        }
                        _ => return None,
                    }
                }
                (operators::OPT_SELECT, Expr::Literal(LiteralValue::String(key))) => {
                    Seg::Key(key.inner().to_owned())
                }
                _ => return None,
            };
            let (root, mut path, nodes) = site_path(&call.args[0], shadow)?;
            path.push(seg);
            Some((root, path, nodes + 2))
        }
        _ => None,
    }
}

// The comprehension a standard macro expands to, by what its body does per element.
enum Loop<'e> {
    // `map` and `filter`: append `item` to a list, when `guard` holds.
    Collect {
        guard: Option<&'e IdedExpr>,
        item: &'e IdedExpr,
    },
    // `all`, `exists`, `exists_one`: fold `predicate` into a bool or a count.
    Fold {
        predicate: &'e IdedExpr,
    },
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(ident) if ident == name)
}

fn call<'e>(e: &'e IdedExpr, function: &str, arity: usize) -> Option<&'e [IdedExpr]> {
    match &e.expr {
        Expr::Call(call)
            if call.target.is_none() && call.func_name == function && call.args.len() == arity =>
        {
            Some(&call.args)
        }
        _ => None,
    }
}

// Recognises the expansions of the standard macros (cel 0.15 `parser/macros.rs`); nothing
// else can produce a comprehension.
fn loop_shape(c: &ComprehensionExpr) -> Option<Loop<'_>> {
    if c.iter_var2.is_some() || c.accu_var != ACCUMULATOR {
        return None;
    }
    let appended = |e: &'_ IdedExpr| -> Option<()> {
        let args = call(e, operators::ADD, 2)?;
        is_ident(&args[0], ACCUMULATOR).then_some(())
    };
    fn item_of(e: &IdedExpr) -> Option<&IdedExpr> {
        match call(e, operators::ADD, 2) {
            Some([accu, list]) if is_ident(accu, ACCUMULATOR) => match &list.expr {
                Expr::List(list) if list.elements.len() == 1 => Some(&list.elements[0]),
                _ => None,
            },
            _ => None,
        }
    }
    match &c.accu_init.expr {
        Expr::List(init) if init.elements.is_empty() && is_ident(&c.result, ACCUMULATOR) => {
            if let Some(item) = item_of(&c.loop_step) {
                return Some(Loop::Collect { guard: None, item });
            }
            match call(&c.loop_step, operators::CONDITIONAL, 3)? {
                [guard, step, otherwise] if is_ident(otherwise, ACCUMULATOR) => {
                    Some(Loop::Collect {
                        guard: Some(guard),
                        item: item_of(step)?,
                    })
                }
                _ => None,
            }
        }
        Expr::Literal(LiteralValue::Boolean(_)) if is_ident(&c.result, ACCUMULATOR) => {
            let args = call(&c.loop_step, operators::LOGICAL_AND, 2)
                .or_else(|| call(&c.loop_step, operators::LOGICAL_OR, 2))?;
            is_ident(&args[0], ACCUMULATOR).then_some(Loop::Fold {
                predicate: &args[1],
            })
        }
        Expr::Literal(LiteralValue::Int(_)) => match call(&c.loop_step, operators::CONDITIONAL, 3)?
        {
            [predicate, step, otherwise] if is_ident(otherwise, ACCUMULATOR) => {
                appended(step)?;
                Some(Loop::Fold { predicate })
            }
            _ => None,
        },
        _ => None,
    }
}

// The static checks of a parsed expression, collecting its sites.
#[derive(Default)]
struct Checker {
    nodes: usize,
    sites: Vec<Site>,
    needs: Needs,
}

impl Checker {
    // `body` is the variable of the macro whose body `e` is in, if any.
    fn check(
        &mut self,
        e: &IdedExpr,
        depth: usize,
        body: Option<&str>,
    ) -> Result<(), ExpressionError> {
        self.count(depth, 1)?;
        if let Some((site, nodes)) = as_site(e, body) {
            self.count(depth + nodes - 1, nodes - 1)?;
            self.record(site);
            return Ok(());
        }
        match &e.expr {
            Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => {
                if body == Some(name.as_str())
                    || (body.is_some() && name == ACCUMULATOR)
                    || TYPE_NAMES.contains(&name.as_str())
                {
                    Ok(())
                } else {
                    Err(ExpressionError::new(format!(
                        "unknown name `{name}`: expressions can use `inputs`, `steps` and `run`"
                    )))
                }
            }
            Expr::Select(select) => {
                if select.test {
                    if let Some((mut site, nodes)) = as_site(&select.operand, body) {
                        self.count(depth + nodes, nodes)?;
                        site.presence = Some(select.field.clone());
                        self.record(site);
                        return Ok(());
                    }
                }
                self.check(&select.operand, depth + 1, body)
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    let namespace = is_ident(target, "optional")
                        && OPTIONAL_FUNCTIONS.contains(&call.func_name.as_str());
                    if namespace {
                        self.count(depth + 1, 1)?;
                    } else {
                        self.check(target, depth + 1, body)?;
                    }
                }
                for arg in &call.args {
                    self.check(arg, depth + 1, body)?;
                }
                Ok(())
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.check(element, depth + 1, body)?;
                }
                Ok(())
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.check(&entry.key, depth + 1, body)?;
                            self.check(&entry.value, depth + 1, body)?;
                        }
                        EntryExpr::StructField(_) => return Err(unsupported_struct()),
                    }
                }
                Ok(())
            }
            Expr::Struct(_) => Err(unsupported_struct()),
            Expr::Comprehension(c) => {
                if body.is_some() {
                    return Err(ExpressionError::new(
                        "`map`, `filter`, `all`, `exists` and `exists_one` cannot be used in \
                         the body of another one (it would multiply their costs); chain them \
                         instead, as in `list.filter(x, …).map(x, …)`",
                    ));
                }
                if loop_shape(c).is_none() {
                    return Err(ExpressionError::new("unsupported comprehension"));
                }
                self.check(&c.iter_range, depth + 1, body)?;
                let var = Some(c.iter_var.as_str());
                self.check(&c.accu_init, depth + 1, var)?;
                self.check(&c.loop_cond, depth + 1, var)?;
                self.check(&c.loop_step, depth + 1, var)?;
                self.check(&c.result, depth + 1, var)
            }
            Expr::Unspecified => Err(ExpressionError::new("the expression is incomplete")),
        }
    }

    fn count(&mut self, depth: usize, nodes: usize) -> Result<(), ExpressionError> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            return Err(ExpressionError::new(format!(
                "the expression is too big (more than {MAX_NODES} nodes once its macros are \
                 expanded)"
            )));
        }
        Ok(())
    }

    fn record(&mut self, site: Site) {
        self.needs.add(&site);
        if !self.sites.contains(&site) {
            self.sites.push(site);
        }
    }
}

fn unsupported_struct() -> ExpressionError {
    ExpressionError::new("message construction (`Type{field: value}`) is not supported")
}

// A bound linear in the size of the element a macro's body is evaluated for:
// `c + k * size(element)`; outside a body `k` is 0.
#[derive(Clone, Copy, Debug, Default)]
struct Lin {
    c: u64,
    k: u64,
}

impl Lin {
    const fn of(c: u64) -> Self {
        Lin { c, k: 0 }
    }

    fn plus(self, other: Lin) -> Lin {
        Lin {
            c: self.c.saturating_add(other.c),
            k: self.k.saturating_add(other.k),
        }
    }

    fn max(self, other: Lin) -> Lin {
        Lin {
            c: self.c.max(other.c),
            k: self.k.max(other.k),
        }
    }

    fn times(self, n: u64) -> Lin {
        Lin {
            c: self.c.saturating_mul(n),
            k: self.k.saturating_mul(n),
        }
    }

    // The sum over a macro's elements: `n` elements whose sizes add up to `total`.
    fn over(self, n: u64, total: u64) -> u64 {
        self.c
            .saturating_mul(n)
            .saturating_add(self.k.saturating_mul(total))
    }
}

// Upper bounds for a node: the size of its value, what evaluating it costs (its operands
// included), and how many elements its value has when it is iterated.
#[derive(Clone, Copy, Debug)]
struct Bound {
    size: Lin,
    cost: Lin,
    count: u64,
}

impl Bound {
    fn scalar(cost: Lin) -> Self {
        Bound {
            size: Lin::of(SCALAR),
            cost,
            count: 0,
        }
    }

    // A value no bigger than `size` (whose element count is then at most size / 8).
    fn sized(size: Lin, cost: Lin) -> Self {
        Bound {
            size,
            cost,
            count: size.c / SCALAR,
        }
    }

    const UNBOUNDED: Bound = Bound {
        size: Lin {
            c: u64::MAX,
            k: u64::MAX,
        },
        cost: Lin {
            c: u64::MAX,
            k: u64::MAX,
        },
        count: u64::MAX,
    };
}

// Works out the cost bounds of expressions against a scope.
struct Meter<'s> {
    scope: &'s Scope,
    // size and element count of every site already measured
    sites: HashMap<(Root, Vec<Seg>), (u64, u64)>,
    // how much data may still be walked to measure sites
    walk_left: u64,
    // what handing over the sites measured for the current expression costs
    conversion: u64,
}

impl<'s> Meter<'s> {
    fn new(scope: &'s Scope) -> Self {
        Meter {
            scope,
            sites: HashMap::new(),
            walk_left: MAX_COST,
            conversion: 0,
        }
    }

    // The bound on evaluating `expression` and turning its value into JSON.
    fn cost(&mut self, expression: &Expression) -> u64 {
        self.conversion = 0;
        let bound = self.bound(&expression.ast, None);
        bound
            .cost
            .c
            .saturating_add(bound.size.c)
            .saturating_add(self.conversion)
    }

    fn site(&mut self, site: &Site, nodes: usize) -> Bound {
        let walk = NODE.saturating_mul(nodes as u64);
        if site.presence.is_some() {
            self.conversion = self.conversion.saturating_add(walk + NODE);
            return Bound::scalar(Lin::of(walk));
        }
        let key = (site.root, site.path.clone());
        let (size, count) = match self.sites.get(&key) {
            Some(known) => *known,
            None => {
                let measured = match resolve(self.scope.root(site.root), &site.path) {
                    None => (SCALAR, 0),
                    Some(value) => (
                        json_size(value, &mut self.walk_left).unwrap_or(u64::MAX),
                        match value {
                            Json::Array(items) => items.len() as u64,
                            Json::Object(entries) => entries.len() as u64,
                            _ => 0,
                        },
                    ),
                };
                self.conversion = self
                    .conversion
                    .saturating_add(measured.0)
                    .saturating_add(walk);
                self.sites.insert(key, measured);
                measured
            }
        };
        Bound {
            size: Lin::of(size),
            cost: Lin::of(walk),
            count,
        }
    }

    // `body` is the variable of the macro whose body `e` is in, if any.
    fn bound(&mut self, e: &IdedExpr, body: Option<&str>) -> Bound {
        if let Some((site, nodes)) = as_site(e, body) {
            return self.site(&site, nodes);
        }
        let node = Lin::of(NODE);
        match &e.expr {
            Expr::Literal(literal) => Bound::sized(Lin::of(literal_size(literal)), node),
            Expr::Ident(name) if body == Some(name.as_str()) => {
                Bound::sized(Lin { c: 0, k: 1 }, node)
            }
            Expr::Ident(_) => Bound::sized(Lin::of(NODE), node),
            Expr::Select(select) => {
                if select.test {
                    if let Some((mut site, nodes)) = as_site(&select.operand, body) {
                        site.presence = Some(select.field.clone());
                        return self.site(&site, nodes + 1);
                    }
                    let operand = self.bound(&select.operand, body);
                    return Bound::scalar(operand.cost.plus(node));
                }
                let operand = self.bound(&select.operand, body);
                Bound::sized(operand.size, operand.cost.plus(node))
            }
            Expr::Call(call) => {
                let mut operands = Vec::with_capacity(call.args.len() + 1);
                if let Some(target) = &call.target {
                    let namespace = is_ident(target, "optional")
                        && OPTIONAL_FUNCTIONS.contains(&call.func_name.as_str());
                    if !namespace {
                        operands.push(self.bound(target, body));
                    }
                }
                for arg in &call.args {
                    operands.push(self.bound(arg, body));
                }
                let costs = operands.iter().fold(node, |sum, b| sum.plus(b.cost));
                let sizes = operands
                    .iter()
                    .fold(Lin::default(), |sum, b| sum.plus(b.size));
                let function = call.func_name.as_str();
                match (function, operands.as_slice()) {
                    (operators::CONDITIONAL, [_, then, otherwise]) => Bound {
                        size: then.size.max(otherwise.size),
                        cost: costs,
                        count: then.count.max(otherwise.count),
                    },
                    (operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT, [of, at]) => {
                        Bound::sized(of.size.plus(Lin::of(SCALAR)), costs.plus(at.size))
                    }
                    _ if SCALAR_CALLS.contains(&function) => Bound::scalar(costs.plus(sizes)),
                    _ => {
                        // `+` concatenates, the other functions return at most their
                        // arguments (`dyn`, `string`, `optional.of`, `orValue`, …)
                        let size = sizes.plus(node);
                        Bound {
                            size,
                            cost: costs.plus(sizes).plus(size),
                            count: if function == operators::ADD {
                                operands.iter().map(|b| b.count).sum::<u64>()
                            } else {
                                size.c / SCALAR
                            },
                        }
                    }
                }
            }
            Expr::List(list) => {
                let mut size = node;
                let mut cost = node;
                for element in &list.elements {
                    let b = self.bound(element, body);
                    size = size.plus(b.size);
                    cost = cost.plus(b.cost).plus(b.size);
                }
                Bound {
                    size,
                    cost,
                    count: list.elements.len() as u64,
                }
            }
            Expr::Map(map) => {
                let mut size = node;
                let mut cost = node;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Bound::UNBOUNDED;
                    };
                    for part in [&entry.key, &entry.value] {
                        let b = self.bound(part, body);
                        size = size.plus(b.size);
                        cost = cost.plus(b.cost).plus(b.size);
                    }
                }
                Bound {
                    size,
                    cost,
                    count: map.entries.len() as u64,
                }
            }
            Expr::Comprehension(c) if body.is_none() => {
                let range = self.bound(&c.iter_range, None);
                let (n, total) = (range.count, range.size.c);
                let var = Some(c.iter_var.as_str());
                // binding the element copies it
                let per_element = node.plus(Lin { c: 0, k: 1 });
                match loop_shape(c) {
                    Some(Loop::Collect { guard, item }) => {
                        let mut each = per_element;
                        if let Some(guard) = guard {
                            each = each.plus(self.bound(guard, var).cost);
                        }
                        let item = self.bound(item, var);
                        // built in a list literal, then copied onto the result
                        each = each.plus(item.cost).plus(item.size.times(2));
                        let size = item.size.plus(Lin::of(SCALAR)).over(n, total);
                        Bound {
                            size: Lin::of(size.saturating_add(NODE)),
                            cost: range
                                .cost
                                .plus(Lin::of(each.over(n, total)))
                                .plus(Lin::of(size)),
                            count: n,
                        }
                    }
                    Some(Loop::Fold { predicate }) => {
                        let each = per_element.plus(self.bound(predicate, var).cost);
                        Bound::scalar(range.cost.plus(Lin::of(each.over(n, total))))
                    }
                    None => Bound::UNBOUNDED,
                }
            }
            // refused by the checker
            Expr::Comprehension(_) | Expr::Struct(_) | Expr::Unspecified => Bound::UNBOUNDED,
        }
    }
}

fn literal_size(literal: &LiteralValue) -> u64 {
    match literal {
        LiteralValue::String(s) => SCALAR + s.inner().len() as u64,
        LiteralValue::Bytes(b) => SCALAR + b.inner().len() as u64,
        _ => SCALAR,
    }
}

fn resolve<'j>(mut value: &'j Json, path: &[Seg]) -> Option<&'j Json> {
    for seg in path {
        value = match (value, seg) {
            (Json::Object(entries), Seg::Key(key)) => entries.get(key)?,
            (Json::Array(items), Seg::Index(index)) => items.get(usize::try_from(*index).ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

// The size of a JSON value in cost units, walking at most `left` units; `None` past that.
fn json_size(value: &Json, left: &mut u64) -> Option<u64> {
    let own = match value {
        Json::String(s) => SCALAR + s.len() as u64,
        _ => SCALAR,
    };
    *left = left.checked_sub(own)?;
    let mut size = own;
    match value {
        Json::Array(items) => {
            for item in items {
                size += json_size(item, left)?;
            }
        }
        Json::Object(entries) => {
            for (key, item) in entries {
                let key_size = SCALAR + key.len() as u64;
                *left = left.checked_sub(key_size)?;
                size += key_size + json_size(item, left)?;
            }
        }
        _ => {}
    }
    Some(size)
}

// Evaluates `expressions` against `scope` with one budget; on failure, the index of the
// expression that failed and why. Runs on the big stack.
fn evaluate_all(
    expressions: &[&Expression],
    scope: &Scope,
) -> Result<Vec<Json>, (usize, ExpressionError)> {
    let mut meter = Meter::new(scope);
    let mut spent = 0u64;
    let mut needs = Needs::default();
    for (index, expression) in expressions.iter().enumerate() {
        spent = spent.saturating_add(meter.cost(expression));
        if spent > MAX_COST {
            return Err((index, too_costly(spent, expressions.len() > 1)));
        }
        needs.merge(&expression.needs);
    }

    let mut context = Context::with_env(Arc::clone(env()));
    for (root, need) in &needs.roots {
        let value = to_val(scope.root(*root), need, 0).map_err(|error| {
            let first = expressions
                .iter()
                .position(|e| e.needs.roots.contains_key(root))
                .unwrap_or(0);
            (first, error)
        })?;
        context.add_variable_as_val(root.name(), value);
    }

    let mut output_left = MAX_COST;
    let mut values = Vec::with_capacity(expressions.len());
    for (index, expression) in expressions.iter().enumerate() {
        let value = CelValue::resolve_val(&expression.ast, &context).map_err(|error| {
            let message = describe_execution_error(&error, expression, scope);
            (index, ExpressionError::new(message))
        })?;
        values.push(to_json(&*value, &mut output_left, 0).map_err(|error| (index, error))?);
    }
    Ok(values)
}

fn too_costly(spent: u64, shared: bool) -> ExpressionError {
    let mib = |units: u64| units as f64 / (1024.0 * 1024.0);
    ExpressionError::new(format!(
        "the expression is too costly for this data: it could process up to {:.1} MiB{}, over \
         the limit of {:.0} MiB (a `map`, `filter`, `all` or `exists` multiplies the cost of \
         its body by the length of its list)",
        mib(spent),
        if shared {
            " together with the templates before it"
        } else {
            ""
        },
        mib(MAX_COST),
    ))
}

// Hands `value` to the interpreter, pruned to what `need` says can be reached.
fn to_val<'v>(
    value: &'v Json,
    need: &Need,
    depth: usize,
) -> Result<Box<dyn Val + 'v>, ExpressionError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(ExpressionError::new(format!(
            "a value is nested more than {MAX_VALUE_DEPTH} levels deep"
        )));
    }
    let keys = match need {
        // only `has` looks at it
        Need::Present => return Ok(Box::new(CelNull)),
        Need::Keys(keys) => Some(keys),
        Need::Whole => None,
    };
    Ok(match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => number_to_val(n),
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(to_val(item, &Need::Whole, depth + 1)?);
            }
            Box::new(CelList::from(list))
        }
        Json::Object(entries) => {
            let mut map = HashMap::new();
            match keys {
                Some(keys) => {
                    for (key, need) in keys {
                        if let Some((key, item)) = entries.get_key_value(key) {
                            map.insert(
                                CelMapKey::from(key.as_str()),
                                to_val(item, need, depth + 1)?,
                            );
                        }
                    }
                }
                None => {
                    map.reserve(entries.len());
                    for (key, item) in entries {
                        map.insert(
                            CelMapKey::from(key.as_str()),
                            to_val(item, &Need::Whole, depth + 1)?,
                        );
                    }
                }
            }
            Box::new(CelMap::from(map))
        }
    })
}

fn number_to_val(n: &Number) -> Box<dyn Val + 'static> {
    if let Some(i) = n.as_i64() {
        Box::new(CelInt::from(i))
    } else if let Some(u) = n.as_u64() {
        Box::new(CelUInt::from(u))
    } else {
        // with `arbitrary_precision`, `as_f64` is `None` past the range of a double
        let float = n
            .as_f64()
            .or_else(|| n.to_string().parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        Box::new(CelDouble::from(float))
    }
}

// Turns the interpreter's value into JSON, spending at most `left` units.
fn to_json(value: &(dyn Val + '_), left: &mut u64, depth: usize) -> Result<Json, ExpressionError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(ExpressionError::new(format!(
            "the result is nested more than {MAX_VALUE_DEPTH} levels deep"
        )));
    }
    let spend = |left: &mut u64, units: u64| {
        *left = left.checked_sub(units).ok_or_else(|| {
            ExpressionError::new(format!(
                "the result is too large (over {} MiB)",
                MAX_COST / (1024 * 1024)
            ))
        })?;
        Ok::<(), ExpressionError>(())
    };
    let kind = value.get_type().kind();
    let no_json = || {
        ExpressionError::new(format!(
            "the result holds a value of type {}, which has no JSON form",
            value.get_type().name()
        ))
    };
    Ok(match kind {
        Kind::NullType => {
            spend(left, SCALAR)?;
            Json::Null
        }
        Kind::Boolean => {
            spend(left, SCALAR)?;
            Json::Bool(*value.downcast_ref::<CelBool>().ok_or_else(no_json)?.inner())
        }
        Kind::Int => {
            spend(left, SCALAR)?;
            Json::from(*value.downcast_ref::<CelInt>().ok_or_else(no_json)?.inner())
        }
        Kind::UInt => {
            spend(left, SCALAR)?;
            Json::from(*value.downcast_ref::<CelUInt>().ok_or_else(no_json)?.inner())
        }
        Kind::Double => {
            spend(left, SCALAR)?;
            let float = *value
                .downcast_ref::<CelDouble>()
                .ok_or_else(no_json)?
                .inner();
            Json::Number(Number::from_f64(float).ok_or_else(|| {
                ExpressionError::new(format!(
                    "the result holds the number {float}, which JSON cannot represent"
                ))
            })?)
        }
        Kind::String => {
            let s = value
                .downcast_ref::<CelString>()
                .ok_or_else(no_json)?
                .inner();
            spend(left, SCALAR + s.len() as u64)?;
            Json::String(s.to_owned())
        }
        Kind::Type => {
            let name = value.downcast_ref::<CelType>().ok_or_else(no_json)?.name();
            spend(left, SCALAR + name.len() as u64)?;
            Json::String(name.to_owned())
        }
        Kind::List => {
            spend(left, SCALAR)?;
            let list = value.downcast_ref::<CelList>().ok_or_else(no_json)?;
            let mut items = Vec::with_capacity(list.inner().len());
            for item in list.inner() {
                items.push(to_json(item.as_ref(), left, depth + 1)?);
            }
            Json::Array(items)
        }
        Kind::Map => {
            spend(left, SCALAR)?;
            let map = value.downcast_ref::<CelMap>().ok_or_else(no_json)?;
            let mut entries = Vec::with_capacity(map.inner().len());
            for (key, item) in map.inner() {
                let CelMapKey::String(name) = key else {
                    return Err(ExpressionError::new(format!(
                        "the result holds a map with the key {}, but JSON object keys must be \
                         strings",
                        describe_key(key)
                    )));
                };
                spend(left, SCALAR + name.inner().len() as u64)?;
                entries.push((name.inner(), item));
            }
            // HashMap order is arbitrary: sort, whatever order serde_json keeps
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut object = Map::new();
            for (name, item) in entries {
                object.insert(name.to_owned(), to_json(item.as_ref(), left, depth + 1)?);
            }
            Json::Object(object)
        }
        Kind::Opaque if value.downcast_ref::<CelOptional>().is_some() => {
            return Err(ExpressionError::new(
                "the result is an optional value, which has no JSON form: unwrap it with \
                 `.orValue(default)` or `.value()`",
            ))
        }
        _ => return Err(no_json()),
    })
}

fn describe_key(key: &CelMapKey<'_>) -> String {
    match key {
        CelMapKey::Bool(b) => format!("{} (a bool)", b.inner()),
        CelMapKey::Int(i) => format!("{} (an int)", i.inner()),
        CelMapKey::UInt(u) => format!("{}u (a uint)", u.inner()),
        CelMapKey::String(s) => format!("{:?}", s.inner()),
    }
}

// "a number (3)", "a map", … for a condition that is not a bool.
fn describe_json(value: &Json) -> String {
    let shown = |text: String| {
        if text.chars().count() > 60 {
            let cut: String = text.chars().take(57).collect();
            format!("{cut}…")
        } else {
            text
        }
    };
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => format!("a number ({})", shown(n.to_string())),
        Json::String(s) => format!("a string ({})", shown(Json::String(s.clone()).to_string())),
        Json::Array(_) => "a list".to_owned(),
        Json::Object(_) => "a map".to_owned(),
    }
}

// `steps.fetch.output`, `inputs["a-b"][0]`; `root` is `None` for a path in a template.
fn format_path(root: Option<Root>, path: &[Seg]) -> String {
    let mut text = root.map(|r| r.name().to_owned()).unwrap_or_default();
    for seg in path {
        match seg {
            Seg::Key(key) if is_identifier(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Seg::Key(key) => {
                text.push('[');
                text.push_str(&Json::String(key.clone()).to_string());
                text.push(']');
            }
            Seg::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// The first parse error, without ANTLR's token lists.
fn describe_parse_errors(errors: &ParseErrors) -> String {
    let Some(error) = errors
        .errors
        .iter()
        .find(|e| !e.msg.starts_with("Incomplete"))
        .or(errors.errors.first())
    else {
        return "the expression does not parse".to_owned();
    };
    let (line, column) = error.pos;
    let at = if line <= 1 {
        format!("at column {column}")
    } else {
        format!("at line {line}, column {column}")
    };
    let message = error
        .msg
        .strip_prefix("Syntax error: ")
        .unwrap_or(&error.msg);
    // ANTLR quotes the offending token: 'x'
    let token = |rest: &str| {
        let rest = rest.split(" expecting").next().unwrap_or(rest).trim();
        let rest = rest.strip_prefix('\'').unwrap_or(rest);
        rest.strip_suffix('\'').unwrap_or(rest).to_owned()
    };
    let why = if message.contains("ecursion limit") {
        return too_deep().message;
    } else if let Some(rest) = message.strip_prefix("mismatched input ") {
        match token(rest).as_str() {
            "<EOF>" => "the expression ends too early".to_owned(),
            t => format!("unexpected `{t}`"),
        }
    } else if let Some(rest) = message
        .strip_prefix("extraneous input ")
        .or_else(|| message.strip_prefix("no viable alternative at input "))
    {
        format!("unexpected `{}`", token(rest))
    } else if let Some(rest) = message.strip_prefix("token recognition error at: ") {
        let t = token(rest);
        if t.starts_with(['"', '\'']) {
            format!("unterminated string or bad escape in `{t}`")
        } else {
            format!("unexpected character `{t}`")
        }
    } else if let Some(rest) = message.strip_prefix("missing ") {
        let mut parts = rest.splitn(2, " at ");
        let missing = token(parts.next().unwrap_or_default());
        match parts.next().map(token).as_deref() {
            Some("<EOF>") | None => format!("missing `{missing}` at the end"),
            Some(before) => format!("missing `{missing}` before `{before}`"),
        }
    } else {
        message.to_owned()
    };
    format!("syntax error {at}: {why}")
}

fn operator_symbol(function: &str) -> Option<&'static str> {
    Some(match function {
        operators::ADD | "add" => "+",
        operators::SUBSTRACT | "sub" => "-",
        operators::MULTIPLY | "mul" => "*",
        operators::DIVIDE | "div" => "/",
        operators::MODULO | "rem" => "%",
        operators::NEGATE | "negate" => "-",
        operators::EQUALS => "==",
        operators::NOT_EQUALS => "!=",
        operators::LESS => "<",
        operators::LESS_EQUALS => "<=",
        operators::GREATER => ">",
        operators::GREATER_EQUALS => ">=",
        operators::IN => "in",
        operators::LOGICAL_NOT => "!",
        operators::LOGICAL_AND => "&&",
        operators::LOGICAL_OR => "||",
        operators::CONDITIONAL => "? :",
        _ => return None,
    })
}

fn value_type(value: &CelValue) -> String {
    value.type_of().to_string()
}

// "an int", "a string".
fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

fn describe_value(value: &CelValue) -> String {
    match value {
        CelValue::Int(i) => i.to_string(),
        CelValue::UInt(u) => format!("{u}u"),
        CelValue::Float(f) => f.to_string(),
        CelValue::Bool(b) => b.to_string(),
        CelValue::String(s) => format!("{:?}", s.as_str()),
        CelValue::Null => "null".to_owned(),
        other => a(&value_type(other)),
    }
}

fn describe_execution_error(
    error: &ExecutionError,
    expression: &Expression,
    scope: &Scope,
) -> String {
    match error {
        ExecutionError::NoSuchKey(key) => missing_key(key, expression, scope),
        ExecutionError::UndeclaredReference(name) => format!("unknown name or function `{name}`"),
        ExecutionError::NoSuchOverload(overload) => {
            let types = overload.argument_types();
            let function = overload.function();
            match (function, types) {
                ("_._" | operators::OPT_SELECT, [of, ..]) => {
                    format!("cannot select a field of {}", a(of))
                }
                (operators::INDEX | operators::OPT_INDEX, [of, with]) => {
                    format!("cannot index {} with {}", a(of), a(with))
                }
                (_, [only]) if operator_symbol(function).is_some() => format!(
                    "`{}` cannot be applied to {}",
                    operator_symbol(function).unwrap_or(function),
                    a(only)
                ),
                (_, [left, right]) if operator_symbol(function).is_some() => format!(
                    "`{}` cannot be applied to {left} and {right}",
                    operator_symbol(function).unwrap_or(function)
                ),
                (_, [on, rest @ ..]) if overload.is_member_function() => format!(
                    "`{function}` cannot be called on {} with ({})",
                    a(on),
                    rest.join(", ")
                ),
                _ => format!("`{function}` cannot be applied to ({})", types.join(", ")),
            }
        }
        ExecutionError::UnsupportedBinaryOperator(op, left, right) => format!(
            "`{}` cannot be applied to {} and {}",
            operator_symbol(op).unwrap_or(op),
            value_type(left),
            value_type(right)
        ),
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "modulo by zero".to_owned(),
        ExecutionError::Overflow(op, _, _) => format!(
            "integer overflow in `{}`",
            operator_symbol(op).unwrap_or(op)
        ),
        ExecutionError::IndexOutOfBounds(index) => {
            format!("index {} is out of range", describe_value(index))
        }
        ExecutionError::UnexpectedType { got, want } => {
            format!("expected {}, got {}", a(want), a(got))
        }
        ExecutionError::FunctionError { function, message } => format!("{function}(): {message}"),
        ExecutionError::ValuesNotComparable(left, right) => format!(
            "{} cannot be compared with {}",
            a(&value_type(left)),
            a(&value_type(right))
        ),
        ExecutionError::UnsupportedKeyType(key) => {
            format!("{} cannot be a map key", a(&value_type(key)))
        }
        ExecutionError::DuplicateKey(key) => {
            format!("the key {} appears twice in a map", describe_value(key))
        }
        ExecutionError::UnsupportedIndex(index, of) => format!(
            "cannot index {} with {}",
            a(&value_type(of)),
            a(&value_type(index))
        ),
        ExecutionError::NotSupportedAsMethod { method, target } => {
            format!("`{method}` cannot be called on {}", a(&value_type(target)))
        }
        ExecutionError::InvalidArgumentCount { expected, actual } => {
            format!("expected {expected} arguments, got {actual}")
        }
        ExecutionError::MissingArgumentOrTarget => "a function is missing an argument".to_owned(),
        other => format!("evaluation failed: {other}"),
    }
}

// "`steps.fetch.output.body` has no key `idd` (its keys: id, name)", when a path written in
// the expression explains the missing key.
fn missing_key(key: &str, expression: &Expression, scope: &Scope) -> String {
    for site in &expression.sites {
        let mut value = scope.root(site.root);
        for (at, seg) in site.path.iter().enumerate() {
            let next = match (value, seg) {
                (Json::Object(entries), Seg::Key(k)) => entries.get(k),
                (Json::Array(items), Seg::Index(i)) => {
                    usize::try_from(*i).ok().and_then(|i| items.get(i))
                }
                _ => None,
            };
            match next {
                Some(next) => value = next,
                None => {
                    if matches!(seg, Seg::Key(k) if k == key) {
                        return format!(
                            "`{}` has no key `{key}`{}",
                            format_path(Some(site.root), &site.path[..at]),
                            keys_hint(value)
                        );
                    }
                    break;
                }
            }
        }
    }
    format!("no such key `{key}`")
}

fn keys_hint(value: &Json) -> String {
    const SHOWN: usize = 10;
    match value {
        Json::Object(entries) if entries.is_empty() => " (it is empty)".to_owned(),
        Json::Object(entries) => {
            let mut keys: Vec<&str> = entries.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let more = if keys.len() > SHOWN { ", …" } else { "" };
            keys.truncate(SHOWN);
            format!(" (its keys: {}{more})", keys.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        Scope {
            inputs: json!({
                "n": 3,
                "name": "Ada",
                "tags": ["a", "b"],
                "user": {"first": "Ada", "last": "Lovelace"},
                "big": 18446744073709551615u64,
                "huge": serde_json::from_str::<Json>("123456789012345678901234567890")
                    .expect("a number"),
                "negative": -5,
                "float": 2.5,
                "flag": true,
                "nothing": null,
            }),
            steps: json!({
                "fetch": {"status": "completed", "output": {
                    "status": 200,
                    "headers": {"content-type": "application/json"},
                    "body": {"id": 42, "items": [{"id": 1, "ok": true}, {"id": 2, "ok": false}]}
                }},
            }),
            run: json!({"id": "run_123", "flowId": "flow_9"}),
        }
    }

    fn eval(source: &str) -> Result<Json, ExpressionError> {
        Expression::compile(source)?.evaluate(&scope())
    }

    fn value(source: &str) -> Json {
        eval(source).unwrap_or_else(|e| panic!("`{source}` failed: {e}"))
    }

    fn error(source: &str) -> String {
        match eval(source) {
            Ok(v) => panic!("`{source}` should fail, gave {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn compile_error(source: &str) -> String {
        Expression::compile(source)
            .expect_err("should not compile")
            .to_string()
    }

    fn render(template: Json) -> Result<Json, TemplateError> {
        Template::compile(&template)?.render(&scope())
    }

    #[test]
    fn arithmetic_strings_and_comparisons() {
        assert_eq!(value("1 + 2 * 3"), json!(7));
        assert_eq!(value("7 / 2"), json!(3));
        assert_eq!(value("7 % 4"), json!(3));
        assert_eq!(value("1.5 + 1.0"), json!(2.5));
        assert_eq!(value("2u + 3u"), json!(5));
        assert_eq!(value("'a' + \"b\""), json!("ab"));
        assert_eq!(value("size('héllo')"), json!(5));
        assert_eq!(
            value("'hello'.startsWith('he') && 'hello'.contains('ll')"),
            json!(true)
        );
        assert_eq!(
            value("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3 && 1 != 2"),
            json!(true)
        );
        assert_eq!(value("'a' in ['a', 'b']"), json!(true));
        assert_eq!(value("[1, 2] + [3]"), json!([1, 2, 3]));
        assert_eq!(value("inputs.n > 2 ? 'big' : 'small'"), json!("big"));
        assert_eq!(value("string(inputs.n) + '!'"), json!("3!"));
        assert_eq!(value("type(1) == int"), json!(true));
        assert_eq!(value("type('x')"), json!("string"));
        assert_eq!(value("int('12') + 1"), json!(13));
        assert_eq!(value("-inputs.negative"), json!(5));
    }

    #[test]
    fn nested_access_has_and_run() {
        assert_eq!(value("steps.fetch.output.body.id"), json!(42));
        assert_eq!(value("steps.fetch.output.body.items[1].id"), json!(2));
        assert_eq!(value("steps.fetch.output.body['items'][0].ok"), json!(true));
        assert_eq!(
            value("steps.fetch.output.headers['content-type']"),
            json!("application/json")
        );
        assert_eq!(value("steps.fetch.status == 'completed'"), json!(true));
        assert_eq!(value("has(inputs.name)"), json!(true));
        assert_eq!(value("has(inputs.missing)"), json!(false));
        assert_eq!(value("has(steps.fetch) && !has(steps.other)"), json!(true));
        assert_eq!(
            value("has(inputs.user.first) && has(inputs.user)"),
            json!(true)
        );
        assert_eq!(value("inputs.?missing.orValue('none')"), json!("none"));
        assert_eq!(value("inputs.?name.orValue('none')"), json!("Ada"));
        assert_eq!(value("run.id"), json!("run_123"));
        assert_eq!(value("run.flowId + '/' + run.id"), json!("flow_9/run_123"));
        assert_eq!(value("size(inputs.tags)"), json!(2));
        assert_eq!(value("'fetch' in steps"), json!(true));
        assert_eq!(value("inputs.nothing == null"), json!(true));
        // a pruned scope still answers `has` and whole uses alike
        assert_eq!(
            value("has(inputs.user.first) ? inputs.user : {}"),
            scope().inputs["user"]
        );
    }

    #[test]
    fn macros() {
        assert_eq!(
            value("steps.fetch.output.body.items.map(i, i.id)"),
            json!([1, 2])
        );
        assert_eq!(
            value("steps.fetch.output.body.items.filter(i, i.ok).map(i, i.id * 10)"),
            json!([10])
        );
        assert_eq!(
            value("steps.fetch.output.body.items.map(i, i.ok, i.id)"),
            json!([1])
        );
        assert_eq!(value("inputs.tags.all(t, size(t) == 1)"), json!(true));
        assert_eq!(value("inputs.tags.exists(t, t == 'b')"), json!(true));
        assert_eq!(
            value("inputs.tags.exists_one(t, t == inputs.name)"),
            json!(false)
        );
        // over a map, the macros see its keys, in no particular order
        assert_eq!(value("size(inputs.user.map(k, k + '!'))"), json!(2));
        assert_eq!(
            value("inputs.user.all(k, k in ['first', 'last'])"),
            json!(true)
        );
        // the macro's variable shadows a root inside its body only
        assert_eq!(
            value("inputs.tags.map(inputs, inputs + '!')"),
            json!(["a!", "b!"])
        );
    }

    #[test]
    fn conditions() {
        let scope = scope();
        let holds = |source: &str| {
            Expression::compile(source)
                .expect("compiles")
                .condition(&scope)
        };
        assert_eq!(holds("inputs.n > 2"), Ok(true));
        assert_eq!(holds("inputs.n > 5"), Ok(false));
        assert_eq!(holds("has(inputs.x)"), Ok(false));
        let not_bool = holds("inputs.n").expect_err("an int is no condition");
        assert_eq!(
            not_bool.to_string(),
            "a condition must be true or false, but this one is a number (3)"
        );
        let not_bool = holds("inputs.name").expect_err("a string is no condition");
        assert!(
            not_bool.to_string().contains("a string (\"Ada\")"),
            "{not_bool}"
        );
        assert!(holds("null").is_err());
        assert!(holds("[true]").is_err());
    }

    #[test]
    fn missing_keys_and_runtime_errors_are_explained() {
        assert_eq!(
            error("steps.fetch.output.body.idd"),
            "`steps.fetch.output.body` has no key `idd` (its keys: id, items)"
        );
        assert_eq!(
            error("steps.other.output"),
            "`steps` has no key `other` (its keys: fetch)"
        );
        assert_eq!(
            error("inputs.user['middle']"),
            "`inputs.user` has no key `middle` (its keys: first, last)"
        );
        assert_eq!(error("{'a': 1}.b"), "no such key `b`");
        assert_eq!(error("1 / 0"), "division by zero");
        assert_eq!(error("1 % 0"), "modulo by zero");
        assert_eq!(error("9223372036854775807 + 1"), "integer overflow in `+`");
        assert_eq!(error("'a' + 1"), "`+` cannot be applied to string and int");
        assert_eq!(error("1 < 'a'"), "`<` cannot be applied to int and string");
        assert_eq!(error("inputs.tags[5]"), "index 5 is out of range");
        assert_eq!(error("inputs.name[0]"), "cannot index a string with an int");
        assert_eq!(
            error("'a'.contains(1)"),
            "`contains` cannot be called on a string with (int)"
        );
        assert_eq!(error("inputs.n ? 1 : 2"), "expected a bool, got an int");
        assert_eq!(
            error("int('x')"),
            "int(): string parse error: invalid digit found in string"
        );
        assert_eq!(
            error("{'a': 1, 'a': 2}"),
            "the key \"a\" appears twice in a map"
        );
        assert_eq!(error("nope(1)"), "unknown name or function `nope`");
        for source in ["inputs.name.x", "'abc'.size().size()"] {
            let message = error(source);
            assert!(
                !message.contains("Value") && !message.contains('{'),
                "{message}"
            );
        }
    }

    #[test]
    fn results_that_have_no_json_form() {
        assert!(error("b'abc'").contains("bytes"));
        assert!(error("{1: 'a'}").contains("JSON object keys must be strings"));
        assert!(error("inputs.?name").contains("optional"));
        assert!(error("1.0 / 0.0").contains("JSON cannot represent"));
        assert!(error("double('nan')").contains("JSON cannot represent"));
    }

    #[test]
    fn numbers() {
        assert_eq!(value("inputs.n"), json!(3));
        assert_eq!(value("type(inputs.n)"), json!("int"));
        assert_eq!(value("inputs.big"), json!(18446744073709551615u64));
        assert_eq!(value("type(inputs.big)"), json!("uint"));
        assert_eq!(value("inputs.big == 18446744073709551615u"), json!(true));
        // beyond 64 bits: an (approximate) double
        assert_eq!(value("type(inputs.huge)"), json!("double"));
        assert_eq!(value("inputs.huge > 1e29"), json!(true));
        assert_eq!(value("inputs.float * 2.0"), json!(5.0));
        assert_eq!(value("type(inputs.float)"), json!("double"));
        assert_eq!(value("-9223372036854775808"), json!(i64::MIN));
        let beyond_doubles = Scope {
            inputs: serde_json::from_str(r#"{"x": 1e400}"#).expect("valid JSON"),
            ..Scope::default()
        };
        let x = Expression::compile("inputs.x > 1.0").expect("compiles");
        assert_eq!(x.evaluate(&beyond_doubles), Ok(json!(true)));
        let x = Expression::compile("inputs.x").expect("compiles");
        assert!(x.evaluate(&beyond_doubles).is_err());
    }

    #[test]
    fn maps_come_out_sorted() {
        assert_eq!(
            value("{'b': 1, 'a': [inputs.n, 'x'], 'c': {'z': null}}"),
            json!({"a": [3, "x"], "b": 1, "c": {"z": null}})
        );
        assert_eq!(value("{'b': 1, 'a': 2}").to_string(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn compile_errors() {
        assert_eq!(
            compile_error("1 +"),
            "syntax error at column 4: the expression ends too early"
        );
        assert_eq!(
            compile_error("(1"),
            "syntax error at column 3: missing `)` at the end"
        );
        assert_eq!(
            compile_error("1)"),
            "syntax error at column 2: unexpected `)`"
        );
        assert_eq!(
            compile_error("'abc"),
            "syntax error at column 1: unterminated string or bad escape in `'abc`"
        );
        assert_eq!(compile_error("a ? b"), compile_error("a ? b"));
        assert!(compile_error("a ? b").starts_with("syntax error at column 6"));
        assert_eq!(
            compile_error("inptus.n"),
            "unknown name `inptus`: expressions can use `inputs`, `steps` and `run`"
        );
        assert_eq!(compile_error("x"), compile_error("x"));
        assert!(compile_error("inputs.tags.map(t, u)").contains("unknown name `u`"));
        assert!(compile_error("inputs.tags.map(1, 2)").contains("argument must be a simple name"));
        assert!(compile_error("has(inputs)").contains("invalid argument to has() macro"));
        assert!(compile_error("Foo{a: 1}").contains("not supported"));
        assert_eq!(compile_error(""), "the expression is empty");
        assert_eq!(compile_error("  \n "), "the expression is empty");
        assert!(compile_error("é").starts_with("syntax error at column 1"));
        assert!(compile_error("1\n+").starts_with("syntax error at line 2, column 2"));
        // compile errors carry no Rust debug dumps
        for source in ["1 +", "a ? b", "((1", "{1:}", "#", "'\\q'", "1 ++ 2"] {
            let message = compile_error(source);
            assert!(
                !message.contains("Error(") && !message.contains("expecting"),
                "{message}"
            );
        }
    }

    #[test]
    fn cost_limits_on_the_shape() {
        let too_long = format!("'{}'", "a".repeat(MAX_SOURCE_BYTES));
        assert!(compile_error(&too_long).contains("bytes long"));
        let fits = format!("size('{}')", "a".repeat(MAX_SOURCE_BYTES - 8));
        assert_eq!(eval(&fits), Ok(json!(MAX_SOURCE_BYTES - 8)));

        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(eval(&nested(MAX_DEPTH - 1)), Ok(json!(1)));
        assert!(compile_error(&nested(MAX_DEPTH + 1)).contains("nested too deeply"));
        assert!(compile_error(&"(".repeat(2000)).contains("nested too deeply"));
        assert!(compile_error(&"[".repeat(2000)).contains("nested too deeply"));
        let lists = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(compile_error(&lists).contains("nested too deeply"));
        // brackets in strings and comments do not count
        let quoted = format!(
            "'{}' + \"{}\" // {}\n",
            "(".repeat(100),
            "[".repeat(100),
            "{".repeat(99)
        );
        assert_eq!(
            eval(&quoted).map(|v| v.as_str().map(str::len)),
            Ok(Some(200))
        );

        // long chains nest the tree without brackets
        let chain = format!("1{}", " + 1".repeat(200));
        assert!(compile_error(&chain).contains("nested too deeply"));
        let select = format!("inputs{}", ".a".repeat(100));
        assert!(compile_error(&select).contains("nested too deeply"));
        let ternaries = format!("{}1", "true ? 1 : ".repeat(60));
        assert!(compile_error(&ternaries).contains("nested too deeply"));
        let wide = format!("[{}]", vec!["1"; MAX_NODES + 1].join(", "));
        assert!(compile_error(&wide).contains("too big"));

        // macros: chained is fine, nested is refused
        assert!(Expression::compile("inputs.tags.filter(t, t != 'a').map(t, t + '!')").is_ok());
        for nested in [
            "inputs.tags.map(t, inputs.tags.map(u, u))",
            "inputs.tags.all(t, inputs.tags.exists(u, u == t))",
            "inputs.tags.filter(t, [1, 2].exists_one(u, u == 1))",
            "inputs.tags.map(t, inputs.tags.filter(u, true).size())",
        ] {
            assert!(
                compile_error(nested).contains("cannot be used in the body"),
                "{nested}"
            );
        }
    }

    // Every kind of nesting at the limit compiles and evaluates without overflowing the
    // evaluator's stack (the test harness's own threads have 2 MiB).
    #[test]
    fn the_deepest_expressions_allowed_run() {
        let d = MAX_DEPTH - 1;
        let cases = [
            format!("{}1{}", "(".repeat(d), ")".repeat(d)),
            format!("{}1{}", "[".repeat(d), "]".repeat(d)),
            format!("{}1{}", "{1: ".repeat(d - 1), "}".repeat(d - 1)),
            format!("{}1{}", "size([".repeat(d / 2), "])".repeat(d / 2)),
            format!("1{}", " + 1".repeat(d - 1)),
            format!("{}1", "true ? 1 : ".repeat(d - 1)),
            format!("{}true", "!".repeat(d - 1)),
            format!(
                "inputs.tags.map(t, {}t{})",
                "[".repeat(d - 6),
                "]".repeat(d - 6)
            ),
        ];
        for source in cases {
            let result = eval(&source);
            assert!(
                result.is_ok()
                    || result
                        .as_ref()
                        .is_err_and(|e| !e.to_string().contains("deep")),
                "{source}: {result:?}"
            );
        }
    }

    #[test]
    fn the_parser_survives_odd_input() {
        let odd = [
            "((((",
            "))))",
            "[[[[",
            "]]]]",
            "{{{{",
            "}}}}",
            "(((1",
            "1)))",
            "a.",
            ".a",
            "..",
            "1..2",
            "'''",
            "\"\"\"",
            "r'",
            "b'\\x",
            "'\\u12'",
            "'\\U0010FFFF'",
            "\u{0}",
            "😀",
            "inputs.😀",
            "1 ? : 2",
            "? :",
            "!",
            "-",
            "--1",
            "!!!!!!!!!true",
            "[1,,2]",
            "{,}",
            "{1:2,}",
            "[1,]",
            "f(,)",
            "a.b.c(",
            "1e",
            "1e999",
            "0x",
            "0xZZ",
            "1u2",
            "in",
            "in in",
            "has()",
            "has(1, 2)",
            "x.map()",
            "x.map(y)",
            "x.filter(y, z, w)",
            "`a`",
            "@result",
            "inputs.?",
            "inputs[?]",
            "[?1]",
            "{?1: 2}",
            "inputs.?a.?b",
            "\\",
            "\"\\",
            "'a' 'b'",
            "1 2 3",
            "null.a",
            "true.false",
            "-9223372036854775809",
            "18446744073709551616u",
        ];
        for source in odd {
            if let Ok(expression) = Expression::compile(source) {
                let _ = expression.evaluate(&scope());
            }
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let pieces = [
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ".",
            ",",
            ":",
            "?",
            "!",
            "-",
            "+",
            "*",
            "/",
            "%",
            "<",
            "==",
            "&&",
            "||",
            " in ",
            "inputs",
            "steps",
            "run",
            "x",
            "1",
            "1.5",
            "2u",
            "'s'",
            "\"",
            "'",
            "b'b'",
            "map",
            "filter",
            "(x, x)",
            "has",
            "size",
            "é",
            " ",
            "\n",
            "\\",
            "//",
            "{{",
            "}}",
            "9223372036854775808",
            "optional",
            ".?",
            "[?",
        ];
        for _ in 0..2000 {
            let mut source = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 20) {
                source.push_str(pieces[((seed >> (i % 40)) as usize + i as usize) % pieces.len()]);
            }
            if let Ok(expression) = Expression::compile(&source) {
                let _ = expression.evaluate(&scope());
            }
            let _ = Template::compile(&Json::String(source));
        }
    }

    #[test]
    fn data_dependent_cost_refuses_blow_ups() {
        let items: Vec<Json> = (0..20_000).map(|i| json!({"id": i, "name": "x"})).collect();
        let big = Scope {
            inputs: json!({"items": items, "text": "y".repeat(200_000), "id": 7}),
            steps: json!({}),
            run: json!({}),
        };
        let run = |source: &str| {
            Expression::compile(source)
                .expect("compiles")
                .evaluate(&big)
        };

        // linear work over big data is fine
        assert_eq!(
            run("inputs.items.filter(i, i.id == inputs.id).map(i, i.name)"),
            Ok(json!(["x"]))
        );
        assert_eq!(run("size(inputs.items.map(i, i.id))"), Ok(json!(20_000)));
        assert_eq!(run("size(inputs.text + inputs.text)"), Ok(json!(400_000)));

        // a copy of big data per element, or many copies of it, is refused before it runs
        for source in [
            "inputs.items.map(i, inputs.text)",
            "inputs.items.map(i, inputs.items)",
            "inputs.items.filter(i, inputs.text + 'x' == i.name)",
            "size([inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, \
             inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, \
             inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, \
             inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs, inputs])",
        ] {
            let refused = run(source).expect_err(source).to_string();
            assert!(refused.contains("too costly"), "{source}: {refused}");
        }

        // only what an expression names is handed over: a huge unrelated step costs nothing
        let huge = Scope {
            inputs: json!({"n": 1}),
            steps: json!({
                "small": {"status": "completed", "output": {"v": 5}},
                "huge": {"status": "completed", "output": "z".repeat(40 * 1024 * 1024)},
            }),
            run: json!({}),
        };
        let small = Expression::compile("steps.small.output.v + inputs.n").expect("compiles");
        assert_eq!(small.evaluate(&huge), Ok(json!(6)));
        let present = Expression::compile("has(steps.huge)").expect("compiles");
        assert_eq!(present.evaluate(&huge), Ok(json!(true)));
        let whole = Expression::compile("size(steps)").expect("compiles");
        assert!(whole
            .evaluate(&huge)
            .is_err_and(|e| e.to_string().contains("too costly")));
    }

    #[test]
    fn exact_templates_keep_the_type() {
        let rendered = render(json!({
            "n": "{{ inputs.n }}",
            "object": "{{ inputs.user }}",
            "list": "{{inputs.tags}}",
            "bool": "{{ inputs.n > 2 }}",
            "null": "{{ null }}",
            "map": "{{ {'a': {'b': 1}} }}",
            "spaced": "{{\n  steps.fetch.output.body.id\n}}",
        }))
        .expect("renders");
        assert_eq!(
            rendered,
            json!({
                "n": 3,
                "object": {"first": "Ada", "last": "Lovelace"},
                "list": ["a", "b"],
                "bool": true,
                "null": null,
                "map": {"a": {"b": 1}},
                "spaced": 42,
            })
        );
    }

    #[test]
    fn embedded_templates_become_text() {
        let rendered = render(json!({
            "greeting": "Hello {{ inputs.name }}!",
            "two": "{{ inputs.user.first }} {{ inputs.user.last }}",
            "json": "tags={{ inputs.tags }} user={{ {'x': 1} }} n={{ inputs.n }} z={{ null }}",
            "outside": " {{ inputs.n }}",
            "braces": "{{ '}}' }} and {{ \"{{\" }} and {{ {'a': 1}['a'] }}}",
            "escape": "use {{ '{{' }} inputs.n }} for a template",
            "lone": "a } and { and }} stay",
            "plain": "no templates",
            "commented": "{{ inputs.n // the count\n }}",
        }))
        .expect("renders");
        assert_eq!(
            rendered,
            json!({
                "greeting": "Hello Ada!",
                "two": "Ada Lovelace",
                "json": r#"tags=["a","b"] user={"x":1} n=3 z=null"#,
                "outside": " 3",
                "braces": "}} and {{ and 1}",
                "escape": "use {{ inputs.n }} for a template",
                "lone": "a } and { and }} stay",
                "plain": "no templates",
                "commented": 3,
            })
        );
    }

    #[test]
    fn templates_go_through_arrays_and_objects_but_not_keys() {
        let template = json!({
            "path": {"id": "{{ steps.fetch.output.body.id }}"},
            "query": {"ids": ["{{ 1 }}", 2, "{{ inputs.tags[0] }}", [["{{ run.id }}"]]]},
            "{{ inputs.n }}": "key kept",
            "body": {"static": [1, {"a": null}], "n": 1.5},
        });
        let compiled = Template::compile(&template).expect("compiles");
        assert_eq!(
            compiled.render(&scope()).expect("renders"),
            json!({
                "path": {"id": 42},
                "query": {"ids": [1, 2, "a", [["run_123"]]]},
                "{{ inputs.n }}": "key kept",
                "body": {"static": [1, {"a": null}], "n": 1.5},
            })
        );
        // a value without templates renders as itself, and a bare template string too
        let literal = json!({"a": [1, "b", {"c": null}]});
        assert_eq!(render(literal.clone()), Ok(literal));
        assert_eq!(render(json!("{{ inputs.n + 1 }}")), Ok(json!(4)));
        assert_eq!(render(json!(7)), Ok(json!(7)));
    }

    #[test]
    fn template_errors_name_the_path() {
        let bad = |template: Json| {
            Template::compile(&template)
                .expect_err("should not compile")
                .to_string()
        };
        assert_eq!(
            bad(json!({"body": {"user": {"name": "{{ inputs.name"}}})),
            "body.user.name: `{{` is not closed by `}}` (write a literal `{{` as {{ '{{' }})"
        );
        assert_eq!(
            bad(json!({"query": {"ids": [1, "x {{ 1 + }}"]}})),
            "query.ids[1]: syntax error at column 6: the expression ends too early"
        );
        assert_eq!(
            bad(json!({"headers": {"X-Trace": "{{ }}"}})),
            "headers[\"X-Trace\"]: the expression is empty"
        );
        assert_eq!(
            bad(json!("{{ nope }}")),
            "unknown name `nope`: expressions can use `inputs`, `steps` and `run`"
        );
        assert!(bad(json!({"a": "{{ 'x }}"})).starts_with("a: `{{` is not closed"));
        let error = Template::compile(&json!({"a": ["{{ (1 }}"]})).expect_err("bad");
        assert_eq!(error.path, "a[0]");

        let template = Template::compile(&json!({
            "fine": "{{ inputs.n }}",
            "body": {"user": {"name": "{{ inputs.user.nmae }}"}},
        }))
        .expect("compiles");
        let error = template.render(&scope()).expect_err("a missing key");
        assert_eq!(error.path, "body.user.name");
        assert_eq!(
            error.to_string(),
            "body.user.name: `inputs.user` has no key `nmae` (its keys: first, last)"
        );
    }

    #[test]
    fn templates_share_one_budget() {
        let scope = Scope {
            inputs: json!({"text": "t".repeat(3 * 1024 * 1024)}),
            ..Scope::default()
        };
        let one = Template::compile(&json!({"a": "{{ inputs.text }}"})).expect("compiles");
        assert!(one.render(&scope).is_ok());
        let fields: Map<String, Json> = (0..8)
            .map(|i| (format!("f{i}"), json!("{{ inputs.text }}")))
            .collect();
        let many = Template::compile(&Json::Object(fields)).expect("compiles");
        let error = many.render(&scope).expect_err("too costly together");
        assert!(
            error
                .to_string()
                .contains("together with the templates before it"),
            "{error}"
        );
        assert!(error.path.starts_with('f'), "{}", error.path);
    }

    #[test]
    fn types_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Expression>();
        shareable::<Template>();
        shareable::<Scope>();
        shareable::<ExpressionError>();
        shareable::<TemplateError>();
    }
}
