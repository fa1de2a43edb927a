//! The SOQL subset the Salesforce simulator understands: field lists (parent paths such as
//! `Account.Name` included) or `COUNT()`, `FROM`, `WHERE` with `=`, `!=`, `<`, `<=`, `>`,
//! `>=`, `IN (…)`, `AND`, `OR`, `NOT` and parentheses, `ORDER BY` (`ASC`/`DESC`,
//! `NULLS FIRST`/`LAST`), `LIMIT` and `OFFSET` (at most 2,000).

use std::cmp::Ordering;

/// A literal of a `WHERE` clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    /// `'text'` (quoted).
    Str(String),
    /// A number.
    Num(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An unquoted date-time literal, normalized to `YYYY-MM-DDThh:mm:ss.000+0000` (UTC).
    DateTime(String),
    /// An unquoted date literal `YYYY-MM-DD`.
    Date(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A `WHERE` condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    Cmp(String, Op, Literal),
    In(String, Vec<Literal>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

/// One `ORDER BY` item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderItem {
    pub(crate) field: String,
    pub(crate) descending: bool,
    pub(crate) nulls_last: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Soql {
    /// The selected fields as written (`None` for `COUNT()`).
    pub(crate) fields: Option<Vec<String>>,
    pub(crate) object: String,
    pub(crate) filter: Option<Cond>,
    pub(crate) order: Vec<OrderItem>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

/// A query the simulator refuses, with Salesforce's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SoqlError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn malformed(message: impl Into<String>) -> SoqlError {
    SoqlError {
        code: "MALFORMED_QUERY",
        message: message.into(),
    }
}

fn tokenize(q: &str) -> Result<Vec<Tok>, SoqlError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push(Tok::Sym("("));
                i += 1;
            }
            ')' => {
                out.push(Tok::Sym(")"));
                i += 1;
            }
            ',' => {
                out.push(Tok::Sym(","));
                i += 1;
            }
            '=' => {
                out.push(Tok::Sym("="));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Sym("!="));
                i += 2;
            }
            '<' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::Sym("<="));
                    i += 2;
                } else if chars.get(i + 1) == Some(&'>') {
                    out.push(Tok::Sym("!="));
                    i += 2;
                } else {
                    out.push(Tok::Sym("<"));
                    i += 1;
                }
            }
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push(Tok::Sym(">="));
                    i += 2;
                } else {
                    out.push(Tok::Sym(">"));
                    i += 1;
                }
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(malformed("unterminated string literal")),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some('n') => s.push('\n'),
                                Some(other) => s.push(*other),
                                None => return Err(malformed("unterminated string literal")),
                            }
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            s.push(*other);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '-' | ':' | '.' | '+'))
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => return Err(malformed(format!("unexpected token: '{other}'"))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Word(w)) = self.peek()
            && w.eq_ignore_ascii_case(kw)
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(malformed(format!("expecting keyword '{kw}'")))
        }
    }

    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn word(&mut self) -> Result<String, SoqlError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(malformed(format!("unexpected token: {other:?}"))),
        }
    }

    fn number(&mut self) -> Result<usize, SoqlError> {
        match self.next() {
            Some(Tok::Num(n)) => n
                .parse()
                .map_err(|_| malformed(format!("invalid number: {n}"))),
            other => Err(malformed(format!("expecting a number, got {other:?}"))),
        }
    }

    fn cond(&mut self) -> Result<Cond, SoqlError> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            let right = self.and()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Cond, SoqlError> {
        let mut left = self.atom()?;
        while self.keyword("AND") {
            let right = self.atom()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Cond, SoqlError> {
        if self.sym("(") {
            let c = self.cond()?;
            if !self.sym(")") {
                return Err(malformed("expecting ')'"));
            }
            return Ok(c);
        }
        if self.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.atom()?)));
        }
        let field = self.word()?;
        if self.keyword("IN") {
            if !self.sym("(") {
                return Err(malformed("expecting '(' after IN"));
            }
            let mut values = Vec::new();
            loop {
                values.push(self.literal()?);
                if self.sym(")") {
                    break;
                }
                if !self.sym(",") {
                    return Err(malformed("expecting ',' or ')' in IN list"));
                }
            }
            return Ok(Cond::In(field, values));
        }
        let op = match self.next() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            other => return Err(malformed(format!("unexpected token: {other:?}"))),
        };
        Ok(Cond::Cmp(field, op, self.literal()?))
    }

    fn literal(&mut self) -> Result<Literal, SoqlError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Literal::Str(s)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Tok::Num(n)) => number_literal(&n),
            other => Err(malformed(format!("unexpected token: {other:?}"))),
        }
    }
}

/// A date-time literal (`2024-05-01T09:30:00Z`, `…+02:00`, `…-05:00`; no milliseconds),
/// a date (`2024-05-01`) or a number.
fn number_literal(n: &str) -> Result<Literal, SoqlError> {
    if n.len() >= 10 && n.as_bytes().get(4) == Some(&b'-') {
        if n.len() == 10 {
            return chrono::NaiveDate::parse_from_str(n, "%Y-%m-%d")
                .map(|d| Literal::Date(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| malformed(format!("invalid date: {n}")));
        }
        let parsed = chrono::DateTime::parse_from_str(n, "%Y-%m-%dT%H:%M:%S%#z")
            .ok()
            .filter(|_| !n.contains('.'));
        return match parsed {
            Some(t) => Ok(Literal::DateTime(format_datetime(
                t.with_timezone(&chrono::Utc),
            ))),
            None => Err(SoqlError {
                code: "INVALID_FIELD",
                message: format!("value of filter criterion is not a valid dateTime: {n}"),
            }),
        };
    }
    n.parse::<f64>()
        .map(Literal::Num)
        .map_err(|_| malformed(format!("invalid number: {n}")))
}

/// Salesforce's record form of a date-time: `2024-05-07T22:07:19.000+0000`.
pub(crate) fn format_datetime(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses a query.
pub(crate) fn parse(q: &str) -> Result<Soql, SoqlError> {
    let mut p = Parser {
        toks: tokenize(q)?,
        pos: 0,
    };
    p.expect_keyword("SELECT")?;
    let fields = if p.keyword("COUNT") {
        if !(p.sym("(") && p.sym(")")) {
            return Err(malformed("expecting COUNT()"));
        }
        None
    } else {
        let mut fields = vec![p.word()?];
        while p.sym(",") {
            fields.push(p.word()?);
        }
        Some(fields)
    };
    p.expect_keyword("FROM")?;
    let object = p.word()?;
    let filter = if p.keyword("WHERE") {
        Some(p.cond()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let field = p.word()?;
            let descending = if p.keyword("DESC") {
                true
            } else {
                p.keyword("ASC");
                false
            };
            // Salesforce's default: nulls first ascending, last descending.
            let mut nulls_last = descending;
            if p.keyword("NULLS") {
                nulls_last = if p.keyword("LAST") {
                    true
                } else {
                    p.expect_keyword("FIRST")?;
                    false
                };
            }
            order.push(OrderItem {
                field,
                descending,
                nulls_last,
            });
            if !p.sym(",") {
                break;
            }
        }
    }
    let limit = if p.keyword("LIMIT") {
        Some(p.number()?)
    } else {
        None
    };
    let offset = if p.keyword("OFFSET") {
        let n = p.number()?;
        if n > 2_000 {
            return Err(SoqlError {
                code: "NUMBER_OUTSIDE_VALID_RANGE",
                message: format!("Maximum SOQL offset allowed is 2000, got {n}"),
            });
        }
        Some(n)
    } else {
        None
    };
    if let Some(t) = p.peek() {
        return Err(malformed(format!("unexpected token: {t:?}")));
    }
    Ok(Soql {
        fields,
        object,
        filter,
        order,
        limit,
        offset,
    })
}

/// How a field's values compare (from the object's field types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Number,
    Bool,
    DateTime,
    Date,
}

/// Compares a stored value (JSON) with a literal for a field of `kind`; `Err` for a literal
/// of the wrong type (Salesforce's `INVALID_FIELD`).
pub(crate) fn compare(
    field: &str,
    kind: Kind,
    have: &serde_json::Value,
    want: &Literal,
) -> Result<Option<Ordering>, SoqlError> {
    use serde_json::Value;
    let wrong = |what: &str| SoqlError {
        code: "INVALID_FIELD",
        message: format!(
            "value of filter criterion for field '{field}' must be of type {what} and should not be enclosed in quotes"
        ),
    };
    if matches!(want, Literal::Null) {
        return Ok(Some(if have.is_null() {
            Ordering::Equal
        } else {
            Ordering::Greater
        }));
    }
    if have.is_null() {
        return Ok(None);
    }
    Ok(match (kind, want) {
        (Kind::DateTime, Literal::DateTime(w)) => have.as_str().map(|h| h.cmp(w.as_str())),
        (Kind::DateTime, _) => return Err(wrong("dateTime")),
        (Kind::Date, Literal::Date(w)) => have.as_str().map(|h| h.cmp(w.as_str())),
        (Kind::Date, _) => return Err(wrong("date")),
        (Kind::Number, Literal::Num(w)) => have.as_f64().and_then(|h| h.partial_cmp(w)),
        (Kind::Number, _) => return Err(wrong("double")),
        (Kind::Bool, Literal::Bool(w)) => have.as_bool().map(|h| h.cmp(w)),
        (Kind::Bool, _) => return Err(wrong("boolean")),
        (Kind::Text, Literal::Str(w)) => match have {
            Value::String(h) => Some(h.as_str().cmp(w.as_str())),
            _ => None,
        },
        (Kind::Text, _) => {
            return Err(SoqlError {
                code: "INVALID_FIELD",
                message: format!(
                    "value of filter criterion for field '{field}' must be a quoted string"
                ),
            });
        }
    })
}

/// Whether `op` holds for an ordering (`None`: a null compared with a value, false except
/// for `!=`).
pub(crate) fn holds(op: Op, ord: Option<Ordering>) -> bool {
    match ord {
        None => op == Op::Ne,
        Some(o) => match op {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        },
    }
}

/// Orders two stored values of one field (nulls handled by the caller).
pub(crate) fn order_values(a: &serde_json::Value, b: &serde_json::Value) -> Ordering {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y))
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_connectors_queries() {
        let q = parse(
            "SELECT Id, Name, Account.Name FROM Contact WHERE SystemModstamp >= 2024-05-01T00:00:00Z \
             AND (SystemModstamp > 2024-05-01T00:00:00Z OR Id > '003000000000001AAA') \
             AND SystemModstamp < 2024-06-01T00:00:00+02:00 ORDER BY SystemModstamp ASC, Id ASC LIMIT 10",
        )
        .unwrap();
        assert_eq!(q.fields.as_ref().unwrap().len(), 3);
        assert_eq!(q.object, "Contact");
        assert_eq!(q.order.len(), 2);
        assert_eq!(q.limit, Some(10));
        let count = parse("SELECT COUNT() FROM Account WHERE IsDeleted = false").unwrap();
        assert!(count.fields.is_none());
        let inq = parse("select Id from Opportunity where StageName in ('A', 'B')").unwrap();
        assert!(matches!(inq.filter, Some(Cond::In(_, ref v)) if v.len() == 2));
    }

    #[test]
    fn refuses_what_salesforce_refuses() {
        assert_eq!(
            parse("SELECT Id FROM Account OFFSET 2001")
                .unwrap_err()
                .code,
            "NUMBER_OUTSIDE_VALID_RANGE"
        );
        assert_eq!(
            parse("SELECT Id FROM Account WHERE SystemModstamp > 2024-05-01T00:00:00.000Z")
                .unwrap_err()
                .code,
            "INVALID_FIELD"
        );
        assert_eq!(parse("SELECT FROM").unwrap_err().code, "MALFORMED_QUERY");
        // A quoted date-time is the wrong type for a date-time field.
        let err = compare(
            "SystemModstamp",
            Kind::DateTime,
            &serde_json::json!("2024-05-01T00:00:00.000+0000"),
            &Literal::Str("2024-05-01T00:00:00Z".into()),
        )
        .unwrap_err();
        assert!(err.message.contains("should not be enclosed in quotes"));
    }

    #[test]
    fn date_time_literals_normalize_to_utc() {
        let Literal::DateTime(s) = number_literal("2024-05-01T02:00:00+02:00").unwrap() else {
            panic!("not a date-time");
        };
        assert_eq!(s, "2024-05-01T00:00:00.000+0000");
    }
}
