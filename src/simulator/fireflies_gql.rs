//! The GraphQL layer of the Fireflies simulator: the schema subset the simulator serves,
//! validation of a parsed document against it (answered like Apollo Server, which Fireflies
//! runs: HTTP 400 with `GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED` or
//! `BAD_USER_INPUT`), and the projection of resolved JSON through a selection set
//! (aliases, fragments, inline fragments, `__typename`).
//!
//! Documents are parsed by `graphql-parser`; nothing here matches query text.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use graphql_parser::Pos;
use graphql_parser::query::{
    Definition, Document, Field, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
    Type, TypeCondition, Value as GqlValue, VariableDefinition,
};
use serde_json::{Map, Value, json};

/// A field of an object type: its name, its type (`String`, `[String]`, `Transcript`,
/// `String!`) and its arguments with their types.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub name: &'static str,
    pub ty: &'static str,
    pub args: &'static [(&'static str, &'static str)],
}

const fn f(name: &'static str, ty: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        args: &[],
    }
}

/// The `transcripts` arguments (Fireflies API reference, `transcripts` query).
pub(crate) const TRANSCRIPTS_ARGS: &[(&str, &str)] = &[
    ("keyword", "String"),
    ("scope", "String"),
    ("title", "String"),
    ("fromDate", "DateTime"),
    ("toDate", "DateTime"),
    ("limit", "Int"),
    ("skip", "Int"),
    ("host_email", "String"),
    ("organizers", "[String]"),
    ("participants", "[String]"),
    ("organizer_email", "String"),
    ("participant_email", "String"),
    ("user_id", "String"),
    ("mine", "Boolean"),
    ("channel_id", "String"),
    ("date", "Float"),
];

const QUERY: &[FieldDef] = &[
    FieldDef {
        name: "transcripts",
        ty: "[Transcript]",
        args: TRANSCRIPTS_ARGS,
    },
    FieldDef {
        name: "transcript",
        ty: "Transcript",
        args: &[("id", "String!")],
    },
    FieldDef {
        name: "user",
        ty: "User",
        args: &[("id", "String")],
    },
    f("users", "[User]"),
];

const TRANSCRIPT: &[FieldDef] = &[
    f("id", "String"),
    f("title", "String"),
    f("date", "Float"),
    f("dateString", "String"),
    f("duration", "Float"),
    f("host_email", "String"),
    f("organizer_email", "String"),
    f("participants", "[String]"),
    f("fireflies_users", "[String]"),
    f("meeting_attendees", "[MeetingAttendee]"),
    f("speakers", "[Speaker]"),
    f("sentences", "[Sentence]"),
    f("summary", "Summary"),
    f("transcript_url", "String"),
    f("audio_url", "String"),
    f("video_url", "String"),
    f("meeting_link", "String"),
    f("calendar_id", "String"),
    f("cal_id", "String"),
    f("calendar_type", "String"),
    f("privacy", "String"),
    f("is_live", "Boolean"),
    f("user", "User"),
];

const ATTENDEE: &[FieldDef] = &[
    f("displayName", "String"),
    f("email", "String"),
    f("phoneNumber", "String"),
    f("name", "String"),
    f("location", "String"),
];

const SPEAKER: &[FieldDef] = &[f("id", "String"), f("name", "String")];

const SENTENCE: &[FieldDef] = &[
    f("index", "Int"),
    f("speaker_name", "String"),
    f("speaker_id", "String"),
    f("text", "String"),
    f("raw_text", "String"),
    f("start_time", "Float"),
    f("end_time", "Float"),
];

const SUMMARY: &[FieldDef] = &[
    f("keywords", "[String]"),
    f("action_items", "String"),
    f("outline", "String"),
    f("overview", "String"),
    f("shorthand_bullet", "String"),
    f("bullet_gist", "String"),
    f("gist", "String"),
    f("short_summary", "String"),
    f("topics_discussed", "[String]"),
    f("meeting_type", "String"),
];

const USER: &[FieldDef] = &[
    f("user_id", "String"),
    f("email", "String"),
    f("name", "String"),
    f("num_transcripts", "Int"),
    f("recent_meeting", "String"),
    f("minutes_consumed", "Float"),
    f("is_admin", "Boolean"),
    f("integrations", "[String]"),
];

/// The scalar types of the schema subset.
const SCALARS: &[&str] = &["String", "Int", "Float", "Boolean", "DateTime", "ID"];

/// The fields of an object type, `None` for a scalar or an unknown type.
pub(crate) fn object_fields(ty: &str) -> Option<&'static [FieldDef]> {
    Some(match ty {
        "Query" => QUERY,
        "Transcript" => TRANSCRIPT,
        "MeetingAttendee" => ATTENDEE,
        "Speaker" => SPEAKER,
        "Sentence" => SENTENCE,
        "Summary" => SUMMARY,
        "User" => USER,
        _ => return None,
    })
}

fn field_def(parent: &str, name: &str) -> Option<&'static FieldDef> {
    object_fields(parent)?.iter().find(|d| d.name == name)
}

/// `[Transcript]!` → `Transcript`.
fn named(ty: &str) -> &str {
    ty.trim_matches(|c| c == '[' || c == ']' || c == '!')
}

/// A GraphQL type reference, parsed from the schema's type strings or a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TyRef {
    Named(String),
    List(Box<TyRef>),
    NonNull(Box<TyRef>),
}

impl TyRef {
    fn parse(s: &str) -> TyRef {
        let s = s.trim();
        if let Some(inner) = s.strip_suffix('!') {
            return TyRef::NonNull(Box::new(TyRef::parse(inner)));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            return TyRef::List(Box::new(TyRef::parse(inner)));
        }
        TyRef::Named(s.to_owned())
    }

    fn from_ast(t: &Type<'_, String>) -> TyRef {
        match t {
            Type::NamedType(n) => TyRef::Named(n.clone()),
            Type::ListType(inner) => TyRef::List(Box::new(TyRef::from_ast(inner))),
            Type::NonNullType(inner) => TyRef::NonNull(Box::new(TyRef::from_ast(inner))),
        }
    }

    fn base(&self) -> &str {
        match self {
            TyRef::Named(n) => n,
            TyRef::List(i) | TyRef::NonNull(i) => i.base(),
        }
    }
}

impl std::fmt::Display for TyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TyRef::Named(n) => f.write_str(n),
            TyRef::List(i) => write!(f, "[{i}]"),
            TyRef::NonNull(i) => write!(f, "{i}!"),
        }
    }
}

/// Whether a variable of type `var` may be used where `arg` is expected (the spec's
/// "All Variable Usages Are Allowed"): same shape, and a nullable variable only in a
/// nullable position unless it has a default.
fn usage_allowed(var: &TyRef, arg: &TyRef, has_default: bool) -> bool {
    match (var, arg) {
        (TyRef::NonNull(v), TyRef::NonNull(a)) => usage_allowed(v, a, false),
        (_, TyRef::NonNull(a)) => has_default && usage_allowed(var, a, false),
        (TyRef::NonNull(v), a) => usage_allowed(v, a, false),
        (TyRef::List(v), TyRef::List(a)) => usage_allowed(v, a, false),
        (TyRef::Named(v), TyRef::Named(a)) => v == a,
        _ => false,
    }
}

/// An error answered with HTTP 400 before execution.
#[derive(Debug, Clone)]
pub(crate) struct RequestError {
    pub code: &'static str,
    pub messages: Vec<(String, Option<Pos>)>,
}

impl RequestError {
    fn one(code: &'static str, message: String, pos: Option<Pos>) -> Self {
        RequestError {
            code,
            messages: vec![(message, pos)],
        }
    }

    /// Apollo's body: `{"errors": [{message, locations, extensions: {code}}]}`.
    pub(crate) fn body(&self) -> Value {
        let errors: Vec<Value> = self
            .messages
            .iter()
            .map(|(m, pos)| {
                let mut e = json!({"message": m, "extensions": {"code": self.code}});
                if let Some(p) = pos {
                    e["locations"] = json!([{"line": p.line, "column": p.column}]);
                }
                e
            })
            .collect();
        json!({ "errors": errors })
    }
}

/// A parsed, validated operation ready to execute.
pub(crate) struct Prepared {
    doc: Document<'static, String>,
    op: usize,
    /// Coerced variable values (defaults applied).
    pub vars: Map<String, Value>,
}

/// One root field to resolve: its output key, name, and arguments as JSON.
pub(crate) struct RootField {
    pub key: String,
    pub name: String,
    pub args: Map<String, Value>,
    pub pos: Pos,
    selection: SelectionSet<'static, String>,
}

fn location(pos: Pos) -> Option<Pos> {
    Some(pos)
}

fn op_parts<'d>(
    op: &'d OperationDefinition<'static, String>,
) -> (
    &'static str,
    &'d [VariableDefinition<'static, String>],
    &'d SelectionSet<'static, String>,
    Option<&'d String>,
) {
    match op {
        OperationDefinition::SelectionSet(s) => ("Query", &[], s, None),
        OperationDefinition::Query(q) => (
            "Query",
            &q.variable_definitions,
            &q.selection_set,
            q.name.as_ref(),
        ),
        OperationDefinition::Mutation(m) => (
            "Mutation",
            &m.variable_definitions,
            &m.selection_set,
            m.name.as_ref(),
        ),
        OperationDefinition::Subscription(s) => (
            "Subscription",
            &s.variable_definitions,
            &s.selection_set,
            s.name.as_ref(),
        ),
    }
}

/// Parses and validates `query` with `variables` and `operation_name`.
pub(crate) fn prepare(
    query: &str,
    variables: &Value,
    operation_name: Option<&str>,
) -> Result<Prepared, RequestError> {
    let doc = graphql_parser::parse_query::<String>(query)
        .map_err(|e| {
            RequestError::one(
                "GRAPHQL_PARSE_FAILED",
                format!("Syntax Error: {}", e.to_string().trim()),
                None,
            )
        })?
        .into_static();
    let ops: Vec<usize> = doc
        .definitions
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d, Definition::Operation(_)))
        .map(|(i, _)| i)
        .collect();
    let op = match operation_name {
        Some(name) => ops.iter().copied().find(|i| {
            matches!(&doc.definitions[*i], Definition::Operation(o) if op_parts(o).3.map(String::as_str) == Some(name))
        }),
        None if ops.len() == 1 => ops.first().copied(),
        None => None,
    };
    let Some(op) = op else {
        let message = match operation_name {
            Some(n) => format!("Unknown operation named \"{n}\"."),
            None if ops.is_empty() => "Must provide an operation.".to_owned(),
            None => "Must provide operation name if query contains multiple operations.".to_owned(),
        };
        return Err(RequestError::one("BAD_REQUEST", message, None));
    };
    let mut v = Validator {
        fragments: doc
            .definitions
            .iter()
            .filter_map(|d| match d {
                Definition::Fragment(fr) => Some((fr.name.clone(), fr)),
                Definition::Operation(_) => None,
            })
            .collect(),
        errors: Vec::new(),
        used_vars: BTreeSet::new(),
        used_fragments: BTreeSet::new(),
        var_types: HashMap::new(),
    };
    for d in &doc.definitions {
        if let Definition::Operation(o) = d {
            v.operation(o);
        }
    }
    for name in v.fragments.keys() {
        if !v.used_fragments.contains(name) {
            let pos = v.fragments.get(name).map(|f| f.position);
            v.errors
                .push((format!("Fragment \"{name}\" is never used."), pos));
        }
    }
    if !v.errors.is_empty() {
        return Err(RequestError {
            code: "GRAPHQL_VALIDATION_FAILED",
            messages: v.errors,
        });
    }
    let vars = match &doc.definitions[op] {
        Definition::Operation(o) => coerce_variables(op_parts(o).1, variables)?,
        Definition::Fragment(_) => Map::new(),
    };
    Ok(Prepared { doc, op, vars })
}

struct Validator<'d> {
    fragments: BTreeMap<String, &'d FragmentDefinition<'static, String>>,
    errors: Vec<(String, Option<Pos>)>,
    used_vars: BTreeSet<String>,
    used_fragments: BTreeSet<String>,
    /// The current operation's variables: type and whether it has a default.
    var_types: HashMap<String, (TyRef, bool)>,
}

impl<'d> Validator<'d> {
    fn operation(&mut self, o: &'d OperationDefinition<'static, String>) {
        let (root, defs, sel, _) = op_parts(o);
        self.var_types.clear();
        self.used_vars.clear();
        for d in defs {
            let ty = TyRef::from_ast(&d.var_type);
            if !SCALARS.contains(&ty.base()) {
                let message = if object_fields(ty.base()).is_some() {
                    format!(
                        "Variable \"${}\" cannot be non-input type \"{ty}\".",
                        d.name
                    )
                } else {
                    format!("Unknown type \"{}\".", ty.base())
                };
                self.errors.push((message, location(d.position)));
            }
            if self
                .var_types
                .insert(d.name.clone(), (ty, d.default_value.is_some()))
                .is_some()
            {
                self.errors.push((
                    format!("There can be only one variable named \"${}\".", d.name),
                    location(d.position),
                ));
            }
        }
        if root != "Query" {
            self.errors.push((
                format!(
                    "Schema is not configured to execute {} operation.",
                    root.to_lowercase()
                ),
                None,
            ));
            return;
        }
        self.selection(sel, "Query", 0);
        for d in defs {
            if !self.used_vars.contains(&d.name) {
                self.errors.push((
                    format!("Variable \"${}\" is never used.", d.name),
                    location(d.position),
                ));
            }
        }
    }

    fn selection(&mut self, sel: &'d SelectionSet<'static, String>, parent: &str, depth: usize) {
        if depth > 32 {
            self.errors
                .push(("The query is nested too deeply.".to_owned(), None));
            return;
        }
        for item in &sel.items {
            match item {
                Selection::Field(field) => self.field(field, parent, depth),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.fragment_name;
                    self.used_fragments.insert(name.clone());
                    match self.fragments.get(name).copied() {
                        None => self.errors.push((
                            format!("Unknown fragment \"{name}\"."),
                            location(spread.position),
                        )),
                        Some(fr) => {
                            let TypeCondition::On(on) = &fr.type_condition;
                            if self.type_condition(on, parent, fr.position) {
                                self.selection(&fr.selection_set, parent, depth + 1);
                            }
                        }
                    }
                }
                Selection::InlineFragment(inline) => {
                    let ok = match &inline.type_condition {
                        Some(TypeCondition::On(on)) => {
                            self.type_condition(on, parent, inline.position)
                        }
                        None => true,
                    };
                    if ok {
                        self.selection(&inline.selection_set, parent, depth + 1);
                    }
                }
            }
        }
    }

    fn type_condition(&mut self, on: &str, parent: &str, pos: Pos) -> bool {
        if object_fields(on).is_none() {
            self.errors
                .push((format!("Unknown type \"{on}\"."), location(pos)));
            return false;
        }
        if on != parent {
            self.errors.push((
                format!(
                    "Fragment cannot be spread here as objects of type \"{parent}\" can never be of type \"{on}\"."
                ),
                location(pos),
            ));
            return false;
        }
        true
    }

    fn field(&mut self, field: &'d Field<'static, String>, parent: &str, depth: usize) {
        let name = field.name.as_str();
        if name == "__typename" {
            if !field.selection_set.items.is_empty() {
                self.errors.push((
                    "Field \"__typename\" must not have a selection since type \"String!\" has no subfields.".into(),
                    location(field.position),
                ));
            }
            return;
        }
        let Some(def) = field_def(parent, name) else {
            self.errors.push((
                format!("Cannot query field \"{name}\" on type \"{parent}\"."),
                location(field.position),
            ));
            return;
        };
        let mut given = BTreeSet::new();
        for (arg, value) in &field.arguments {
            given.insert(arg.as_str());
            match def.args.iter().find(|(n, _)| *n == arg.as_str()) {
                None => self.errors.push((
                    format!("Unknown argument \"{arg}\" on field \"{parent}.{name}\"."),
                    location(field.position),
                )),
                Some((_, ty)) => self.value(value, &TyRef::parse(ty), field.position),
            }
        }
        for (arg, ty) in def.args {
            if ty.ends_with('!') && !given.contains(arg) {
                self.errors.push((
                    format!(
                        "Field \"{name}\" argument \"{arg}\" of type \"{ty}\" is required, but it was not provided."
                    ),
                    location(field.position),
                ));
            }
        }
        let base = named(def.ty);
        let is_object = object_fields(base).is_some();
        match (is_object, field.selection_set.items.is_empty()) {
            (true, true) => self.errors.push((
                format!(
                    "Field \"{name}\" of type \"{}\" must have a selection of subfields. Did you mean \"{name} {{ ... }}\"?",
                    def.ty
                ),
                location(field.position),
            )),
            (false, false) => self.errors.push((
                format!(
                    "Field \"{name}\" must not have a selection since type \"{}\" has no subfields.",
                    def.ty
                ),
                location(field.position),
            )),
            (true, false) => self.selection(&field.selection_set, base, depth + 1),
            (false, true) => {}
        }
    }

    /// Checks a literal (or variable) against the argument type `ty`.
    fn value(&mut self, v: &GqlValue<'static, String>, ty: &TyRef, pos: Pos) {
        let bad = |s: &mut Self, found: String| {
            s.errors.push((
                format!("Expected value of type \"{ty}\", found {found}."),
                location(pos),
            ));
        };
        match (v, ty) {
            (GqlValue::Variable(name), _) => {
                self.used_vars.insert(name.clone());
                match self.var_types.get(name) {
                    None => self.errors.push((
                        format!("Variable \"${name}\" is not defined."),
                        location(pos),
                    )),
                    Some((var_ty, has_default)) => {
                        if !usage_allowed(var_ty, ty, *has_default) {
                            self.errors.push((
                                format!(
                                    "Variable \"${name}\" of type \"{var_ty}\" used in position expecting type \"{ty}\"."
                                ),
                                location(pos),
                            ));
                        }
                    }
                }
            }
            (GqlValue::Null, TyRef::NonNull(_)) => bad(self, "null".into()),
            (GqlValue::Null, _) => {}
            (_, TyRef::NonNull(inner)) => self.value(v, inner, pos),
            (GqlValue::List(items), TyRef::List(inner)) => {
                for i in items {
                    self.value(i, inner, pos);
                }
            }
            (_, TyRef::List(inner)) => self.value(v, inner, pos),
            (GqlValue::List(_), TyRef::Named(_)) => bad(self, "a list".into()),
            (v, TyRef::Named(n)) => {
                let ok = matches!(
                    (v, n.as_str()),
                    (GqlValue::Int(_), "Int" | "Float" | "ID")
                        | (GqlValue::Float(_), "Float")
                        | (GqlValue::String(_), "String" | "DateTime" | "ID")
                        | (GqlValue::Boolean(_), "Boolean")
                );
                if !ok {
                    bad(self, literal_text(v));
                }
            }
        }
    }
}

fn literal_text(v: &GqlValue<'static, String>) -> String {
    match v {
        GqlValue::String(s) => format!("\"{s}\""),
        GqlValue::Int(n) => n
            .as_i64()
            .map_or_else(|| "an integer".into(), |i| i.to_string()),
        GqlValue::Float(x) => x.to_string(),
        GqlValue::Boolean(b) => b.to_string(),
        GqlValue::Enum(e) => e.clone(),
        GqlValue::Null => "null".into(),
        GqlValue::Variable(n) => format!("${n}"),
        GqlValue::List(_) => "a list".into(),
        GqlValue::Object(_) => "an object".into(),
    }
}

/// Coerces the request's variables to the operation's declared types (Apollo answers a bad
/// value with 400 `BAD_USER_INPUT`).
fn coerce_variables(
    defs: &[VariableDefinition<'static, String>],
    given: &Value,
) -> Result<Map<String, Value>, RequestError> {
    let empty = Map::new();
    let given = match given {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => {
            return Err(RequestError::one(
                "BAD_REQUEST",
                "`variables` in a POST body should be an object.".into(),
                None,
            ));
        }
    };
    let mut out = Map::new();
    let mut errors = Vec::new();
    for d in defs {
        let ty = TyRef::from_ast(&d.var_type);
        let value = match given.get(&d.name) {
            Some(v) => Some(v.clone()),
            None => d
                .default_value
                .as_ref()
                .map(|dv| literal_json(dv, &Map::new())),
        };
        match value {
            None | Some(Value::Null) if matches!(ty, TyRef::NonNull(_)) => errors.push((
                format!(
                    "Variable \"${}\" of non-null type \"{ty}\" must not be null.",
                    d.name
                ),
                location(d.position),
            )),
            None => {}
            Some(v) => match check_json(&v, &ty) {
                Ok(()) => {
                    out.insert(d.name.clone(), v);
                }
                Err(why) => errors.push((
                    format!("Variable \"${}\" got invalid value {v}; {why}", d.name),
                    location(d.position),
                )),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RequestError {
            code: "BAD_USER_INPUT",
            messages: errors,
        })
    }
}

/// Whether a JSON variable value fits a type (input coercion).
fn check_json(v: &Value, ty: &TyRef) -> Result<(), String> {
    match (v, ty) {
        (Value::Null, TyRef::NonNull(_)) => Err(format!(
            "Expected non-nullable type \"{ty}\" not to be null."
        )),
        (Value::Null, _) => Ok(()),
        (_, TyRef::NonNull(inner)) => check_json(v, inner),
        (Value::Array(items), TyRef::List(inner)) => {
            items.iter().try_for_each(|i| check_json(i, inner))
        }
        (_, TyRef::List(inner)) => check_json(v, inner),
        (v, TyRef::Named(n)) => {
            let ok = match n.as_str() {
                "Int" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "Float" => v.is_number(),
                "String" | "DateTime" => v.is_string(),
                "ID" => v.is_string() || v.as_i64().is_some(),
                "Boolean" => v.is_boolean(),
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{n} cannot represent value: {v}"))
            }
        }
    }
}

/// A literal (with variables substituted) as JSON.
fn literal_json(v: &GqlValue<'static, String>, vars: &Map<String, Value>) -> Value {
    match v {
        GqlValue::Variable(n) => vars.get(n).cloned().unwrap_or(Value::Null),
        GqlValue::Int(n) => n.as_i64().map_or(Value::Null, Value::from),
        GqlValue::Float(x) => json!(x),
        GqlValue::String(s) => Value::String(s.clone()),
        GqlValue::Boolean(b) => Value::Bool(*b),
        GqlValue::Null => Value::Null,
        GqlValue::Enum(e) => Value::String(e.clone()),
        GqlValue::List(items) => {
            Value::Array(items.iter().map(|i| literal_json(i, vars)).collect())
        }
        GqlValue::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), literal_json(v, vars)))
                .collect(),
        ),
    }
}

impl Prepared {
    fn fragments(&self) -> HashMap<&str, &FragmentDefinition<'static, String>> {
        self.doc
            .definitions
            .iter()
            .filter_map(|d| match d {
                Definition::Fragment(f) => Some((f.name.as_str(), f)),
                Definition::Operation(_) => None,
            })
            .collect()
    }

    /// The root fields to resolve, in order, fragments flattened.
    pub(crate) fn root_fields(&self) -> Vec<RootField> {
        let Some(Definition::Operation(op)) = self.doc.definitions.get(self.op) else {
            return Vec::new();
        };
        let (_, _, sel, _) = op_parts(op);
        let frags = self.fragments();
        let mut out = Vec::new();
        let mut fields = Vec::new();
        flatten(sel, &frags, &mut fields, 0);
        for field in fields {
            let args = field
                .arguments
                .iter()
                .map(|(k, v)| (k.clone(), literal_json(v, &self.vars)))
                .collect();
            out.push(RootField {
                key: field.alias.clone().unwrap_or_else(|| field.name.clone()),
                name: field.name.clone(),
                args,
                pos: field.position,
                selection: field.selection_set.clone(),
            });
        }
        out
    }

    /// Projects a resolved value of type `ty` (`[Transcript]`, `User`, …) through a root
    /// field's selection.
    pub(crate) fn project(&self, root: &RootField, ty: &str, value: &Value) -> Value {
        let frags = self.fragments();
        project(value, named(ty), &root.selection, &frags)
    }
}

/// The fields of a selection set with fragments expanded (validation made sure every
/// fragment applies to the type and exists).
fn flatten<'d>(
    sel: &'d SelectionSet<'static, String>,
    frags: &HashMap<&str, &'d FragmentDefinition<'static, String>>,
    out: &mut Vec<&'d Field<'static, String>>,
    depth: usize,
) {
    if depth > 32 {
        return;
    }
    for item in &sel.items {
        match item {
            Selection::Field(f) => out.push(f),
            Selection::FragmentSpread(s) => {
                if let Some(fr) = frags.get(s.fragment_name.as_str()) {
                    flatten(&fr.selection_set, frags, out, depth + 1);
                }
            }
            Selection::InlineFragment(i) => flatten(&i.selection_set, frags, out, depth + 1),
        }
    }
}

fn project(
    value: &Value,
    ty: &str,
    sel: &SelectionSet<'static, String>,
    frags: &HashMap<&str, &FragmentDefinition<'static, String>>,
) -> Value {
    match value {
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| project(i, ty, sel, frags)).collect())
        }
        Value::Object(obj) => {
            let mut fields = Vec::new();
            flatten(sel, frags, &mut fields, 0);
            let mut out = Map::new();
            for field in fields {
                let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
                let v = if field.name == "__typename" {
                    Value::String(ty.to_owned())
                } else {
                    let raw = obj.get(&field.name).cloned().unwrap_or(Value::Null);
                    match field_def(ty, &field.name) {
                        Some(def) if object_fields(named(def.ty)).is_some() => {
                            project(&raw, named(def.ty), &field.selection_set, frags)
                        }
                        _ => raw,
                    }
                };
                merge_into(&mut out, key, v);
            }
            Value::Object(out)
        }
        // A malformed record keeps its odd value (the connector must cope).
        other => other.clone(),
    }
}

/// Puts `v` under `key`, merging objects selected twice (`summary { a } ...F` with
/// `F = { summary { b } }`).
fn merge_into(out: &mut Map<String, Value>, key: String, v: Value) {
    match (out.get_mut(&key), v) {
        (Some(Value::Object(a)), Value::Object(b)) => {
            for (k, v) in b {
                merge_into(a, k, v);
            }
        }
        (Some(Value::Array(a)), Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                if let (Value::Object(xo), Value::Object(yo)) = (x, y) {
                    for (k, v) in yo {
                        merge_into(xo, k, v);
                    }
                }
            }
        }
        (_, v) => {
            out.insert(key, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(q: &str, vars: Value) -> (String, Vec<String>) {
        match prepare(q, &vars, None) {
            Ok(_) => panic!("accepted: {q}"),
            Err(e) => (
                e.code.to_owned(),
                e.messages.into_iter().map(|(m, _)| m).collect(),
            ),
        }
    }

    #[test]
    fn valid_documents_with_variables_aliases_and_fragments() {
        let q = r#"
            query Page($from: DateTime, $limit: Int = 50) {
              list: transcripts(fromDate: $from, limit: $limit, skip: 0) { ...T }
              me: user { email }
              users { email }
            }
            fragment T on Transcript { id title summary { overview } ... on Transcript { summary { keywords } } }
        "#;
        let p = prepare(q, &json!({"from": "2024-01-01T00:00:00.000Z"}), None).unwrap();
        assert_eq!(p.vars["limit"], json!(50));
        let roots = p.root_fields();
        let keys: Vec<_> = roots
            .iter()
            .map(|r| (r.key.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("list", "transcripts"), ("me", "user"), ("users", "users")]
        );
        assert_eq!(roots[0].args["fromDate"], json!("2024-01-01T00:00:00.000Z"));
        let v = json!([{"id": "a", "title": "t", "date": 1, "summary": {"overview": "o", "keywords": ["k"], "gist": "g"}}]);
        assert_eq!(
            p.project(&roots[0], "[Transcript]", &v),
            json!([{"id": "a", "title": "t", "summary": {"overview": "o", "keywords": ["k"]}}])
        );
    }

    #[test]
    fn validation_errors_like_apollo() {
        let (code, m) = errs("{ transcripts { id nope } }", Value::Null);
        assert_eq!(code, "GRAPHQL_VALIDATION_FAILED");
        assert_eq!(m, ["Cannot query field \"nope\" on type \"Transcript\"."]);
        let (_, m) = errs("{ transcripts(first: 3) { id } }", Value::Null);
        assert!(m[0].contains("Unknown argument \"first\""), "{m:?}");
        let (_, m) = errs(
            "query($l: String) { transcripts(limit: $l) { id } }",
            Value::Null,
        );
        assert!(
            m[0].contains("used in position expecting type \"Int\""),
            "{m:?}"
        );
        let (_, m) = errs("{ transcripts(limit: \"5\") { id } }", Value::Null);
        assert!(m[0].contains("Expected value of type \"Int\""), "{m:?}");
        let (_, m) = errs("{ transcripts { summary } }", Value::Null);
        assert!(m[0].contains("must have a selection"), "{m:?}");
        let (_, m) = errs("{ transcript { id } }", Value::Null);
        assert!(
            m[0].contains("argument \"id\" of type \"String!\" is required"),
            "{m:?}"
        );
        let (_, m) = errs("query($x: Int) { users { email } }", Value::Null);
        assert!(m[0].contains("never used"), "{m:?}");
        let (_, m) = errs("{ transcripts { ...Nope } }", Value::Null);
        assert!(m[0].contains("Unknown fragment"), "{m:?}");
        let (code, _) = errs("{ transcripts { id }", Value::Null);
        assert_eq!(code, "GRAPHQL_PARSE_FAILED");
        let (code, m) = errs(
            "query($l: Int) { transcripts(limit: $l) { id } }",
            json!({"l": "fifty"}),
        );
        assert_eq!(code, "BAD_USER_INPUT");
        assert!(m[0].contains("$l"), "{m:?}");
    }
}
