//! The parser: recursive descent over the lexer's tokens, resolving paths as it goes.
//!
//! Precedence, loosest first: `OR`, `AND`, `NOT`, comparisons and `IN`/`NIN` (which do not
//! chain), `+ -`, `* / %`, unary minus, then constants, paths, calls and parentheses.

use crate::ast::{
    Aggregate, BinaryOp, Collection, Condition, Constant, Expr, Function, Path, Projection, Query,
    Segment, Select, SelectItem,
};
use crate::error::{Location, ParseError, ParseErrorKind};
use crate::lexer::{Tok, Token, lex};
use crate::names;

/// The longest query text Azure accepts, in characters.
pub const MAX_QUERY_CHARS: usize = 8192;

/// How deeply expressions may nest (parentheses, `NOT`, operators). Bounds the recursion of
/// the parser and of everything that walks a tree.
pub const MAX_DEPTH: usize = 100;

type PResult<T> = Result<T, ParseError>;

/// An expression and the height of its tree.
struct E {
    expr: Expr,
    depth: usize,
}

/// A path as written, before the collection is known.
struct RawPath {
    segments: Vec<Segment>,
    at: usize,
    end: usize,
}

enum RawProjection {
    Path(RawPath),
    Count,
    Of(fn(Path) -> Aggregate, RawPath),
}

struct RawItem {
    value: RawProjection,
    alias: Option<String>,
    at: usize,
}

struct Parser<'t> {
    text: &'t str,
    toks: Vec<Token>,
    pos: usize,
    collection: Collection,
    nesting: usize,
}

pub(crate) fn parse_query(text: &str) -> PResult<Query> {
    let mut p = Parser::new(text, Collection::Devices)?;
    p.query()
}

pub(crate) fn parse_condition(text: &str) -> PResult<Condition> {
    let mut p = Parser::new(text, Collection::Devices)?;
    if p.peek() == &Tok::Star && p.peek_at(1) == &Tok::Eof {
        return Ok(Condition::All);
    }
    p.eat_word("WHERE");
    let e = p.or()?;
    p.end()?;
    Ok(Condition::Where(e.expr))
}

impl<'t> Parser<'t> {
    fn new(text: &'t str, collection: Collection) -> PResult<Parser<'t>> {
        if text.len() > MAX_QUERY_CHARS {
            let length = text.chars().count();
            if length > MAX_QUERY_CHARS {
                return Err(ParseError {
                    kind: ParseErrorKind::TooLong {
                        length,
                        max: MAX_QUERY_CHARS,
                    },
                    location: None,
                });
            }
        }
        let toks = lex(text).map_err(|(kind, at)| ParseError {
            kind,
            location: Some(Location::of(text, at)),
        })?;
        if toks.len() == 1 {
            return Err(ParseError {
                kind: ParseErrorKind::Empty,
                location: None,
            });
        }
        Ok(Parser {
            text,
            toks,
            pos: 0,
            collection,
            nesting: 0,
        })
    }

    // ---- token access

    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        // The last token is always Eof.
        let i = (self.pos + n).min(self.toks.len() - 1);
        &self.toks[i].tok
    }

    /// The byte offset of the current token.
    fn at(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].at
    }

    /// The byte offset just after the previous token (for spans of source text).
    fn prev_end(&self) -> usize {
        let start = self.toks[self.pos.saturating_sub(1)].at;
        self.text[..self.at()].trim_end().len().max(start)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err(&self, kind: ParseErrorKind, at: usize) -> ParseError {
        ParseError {
            kind,
            location: Some(Location::of(self.text, at)),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        self.err(
            ParseErrorKind::Expected {
                expected: what.to_owned(),
                found: self.peek().describe(),
            },
            self.at(),
        )
    }

    fn is_word(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn is_word_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_word(&mut self, kw: &str) -> bool {
        let yes = self.is_word(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn expect_word(&mut self, kw: &str) -> PResult<()> {
        if self.eat_word(kw) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{kw}'")))
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> PResult<()> {
        if self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn unsupported(&self, construct: &str, hint: Option<&str>) -> ParseError {
        self.err(ParseErrorKind::unsupported(construct, hint), self.at())
    }

    fn enter(&mut self) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(self.err(ParseErrorKind::TooDeep(MAX_DEPTH), self.at()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn node(&self, expr: Expr, depth: usize, at: usize) -> PResult<E> {
        if depth > MAX_DEPTH {
            return Err(self.err(ParseErrorKind::TooDeep(MAX_DEPTH), at));
        }
        Ok(E { expr, depth })
    }

    // ---- query

    fn query(&mut self) -> PResult<Query> {
        if !self.eat_word("SELECT") {
            for verb in ["INSERT", "UPDATE", "DELETE", "CREATE", "DROP"] {
                if self.is_word(verb) {
                    return Err(self.unsupported(verb, Some("Only SELECT queries exist.")));
                }
            }
            return Err(self.expected("'SELECT'"));
        }
        let mut top = None;
        if self.eat_word("TOP") {
            match self.peek() {
                Tok::Num(n) if n.is_u64() => {
                    top = n.as_u64();
                    self.bump();
                }
                _ => return Err(self.expected("a whole number after TOP")),
            }
        }
        if self.is_word("DISTINCT") {
            return Err(self.unsupported(
                "SELECT DISTINCT",
                Some("Use GROUP BY to get each value once."),
            ));
        }
        if self.is_word("VALUE") {
            return Err(self.unsupported("SELECT VALUE", None));
        }
        let star_at = self.at();
        let raw_items = if self.peek() == &Tok::Star {
            self.bump();
            None
        } else {
            let mut items = vec![self.select_item()?];
            while self.peek() == &Tok::Comma {
                self.bump();
                items.push(self.select_item()?);
            }
            Some(items)
        };
        if self.peek() == &Tok::Comma {
            return Err(self.err(ParseErrorKind::BadSelectItem, self.at()));
        }
        self.expect_word("FROM")?;
        self.collection = self.collection_name()?;
        if self.is_word("JOIN") {
            return Err(self.unsupported("JOIN", Some("A query reads one collection.")));
        }
        if matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case("AS") || !names::is_reserved(w))
        {
            return Err(self.unsupported(
                "A collection alias",
                Some("Write paths without an alias, or with the collection as prefix (devices.tags.x)."),
            ));
        }
        let item_ats: Vec<usize> = raw_items.iter().flatten().map(|i| i.at).collect();
        let select = match raw_items {
            None => Select::All,
            Some(items) => Select::Items(self.resolve_items(items)?),
        };
        let condition = if self.eat_word("WHERE") {
            Condition::Where(self.or()?.expr)
        } else {
            Condition::All
        };
        let mut group_by = Vec::new();
        if self.eat_word("GROUP") {
            self.expect_word("BY")?;
            loop {
                let raw = self.raw_path_here("a property path")?;
                group_by.push(self.resolve(raw)?);
                if self.peek() != &Tok::Comma {
                    break;
                }
                self.bump();
            }
        }
        self.end()?;
        let query = Query {
            top,
            select,
            from: self.collection,
            condition,
            group_by,
        };
        self.validate(&query, star_at, &item_ats)?;
        Ok(query)
    }

    /// Requires the end of the text, naming the clause when it is one the language lacks.
    fn end(&mut self) -> PResult<()> {
        let tails: [(&str, &str, Option<&str>); 6] = [
            (
                "ORDER",
                "ORDER BY",
                Some("Results come in device id order."),
            ),
            ("HAVING", "HAVING", None),
            ("LIMIT", "LIMIT", Some("Use SELECT TOP n.")),
            (
                "OFFSET",
                "OFFSET",
                Some("Page through results with the continuation token."),
            ),
            ("UNION", "UNION", None),
            ("JOIN", "JOIN", Some("A query reads one collection.")),
        ];
        for (word, construct, hint) in tails {
            if self.is_word(word) {
                return Err(self.unsupported(construct, hint));
            }
        }
        if self.peek() != &Tok::Eof {
            return Err(self.expected("the end of the query"));
        }
        Ok(())
    }

    fn collection_name(&mut self) -> PResult<Collection> {
        let at = self.at();
        let Tok::Word(first) = self.peek().clone() else {
            return Err(self.expected("a collection (devices, devices.modules or devices.jobs)"));
        };
        self.bump();
        let mut name = first.clone();
        if self.peek() == &Tok::Dot
            && let Tok::Word(second) = self.peek_at(1).clone()
        {
            self.bump();
            self.bump();
            name = format!("{first}.{second}");
        }
        match name.to_ascii_lowercase().as_str() {
            "devices" => Ok(Collection::Devices),
            "devices.modules" => Ok(Collection::Modules),
            "devices.jobs" => Ok(Collection::Jobs),
            _ => Err(self.err(ParseErrorKind::UnknownCollection(name), at)),
        }
    }

    fn select_item(&mut self) -> PResult<RawItem> {
        let at = self.at();
        let value = match self.peek().clone() {
            Tok::Word(w) if self.peek_at(1) == &Tok::LParen => {
                let upper = w.to_ascii_uppercase();
                let of: fn(Path) -> Aggregate = match upper.as_str() {
                    "COUNT" => {
                        self.bump();
                        self.bump();
                        // COUNT(*) is accepted as a spelling of COUNT().
                        if self.peek() == &Tok::Star {
                            self.bump();
                        }
                        if self.peek() != &Tok::RParen {
                            return Err(self.err(
                                ParseErrorKind::WrongArgumentCount {
                                    function: "COUNT".to_owned(),
                                    expected: 0,
                                    found: 1,
                                },
                                at,
                            ));
                        }
                        self.bump();
                        return self.alias(RawProjection::Count, at);
                    }
                    "AVG" => Aggregate::Avg,
                    "SUM" => Aggregate::Sum,
                    "MIN" => Aggregate::Min,
                    "MAX" => Aggregate::Max,
                    _ if Function::from_name(&w).is_some() => {
                        return Err(self.err(ParseErrorKind::BadSelectItem, at));
                    }
                    _ => {
                        return Err(self.err(ParseErrorKind::UnsupportedFunction { name: w }, at));
                    }
                };
                self.bump();
                self.bump();
                let raw =
                    self.raw_path_here(&format!("a property path as the argument of {upper}"))?;
                self.expect(&Tok::RParen, "')'")?;
                RawProjection::Of(of, raw)
            }
            Tok::Word(w) if !names::is_reserved(&w) => {
                RawProjection::Path(self.raw_path_here("a property path")?)
            }
            _ => return Err(self.err(ParseErrorKind::BadSelectItem, at)),
        };
        self.alias(value, at)
    }

    fn alias(&mut self, value: RawProjection, at: usize) -> PResult<RawItem> {
        let mut alias = None;
        if self.eat_word("AS") {
            let a = match self.peek() {
                Tok::Word(a) if !names::is_reserved(a) => a.clone(),
                _ => return Err(self.expected("a name after AS")),
            };
            self.bump();
            alias = Some(a);
        }
        Ok(RawItem { value, alias, at })
    }

    fn resolve_items(&self, items: Vec<RawItem>) -> PResult<Vec<SelectItem>> {
        items
            .into_iter()
            .map(|item| {
                let value = match item.value {
                    RawProjection::Path(raw) => Projection::Path(self.resolve(raw)?),
                    RawProjection::Count => Projection::Aggregate(Aggregate::Count),
                    RawProjection::Of(of, raw) => Projection::Aggregate(of(self.resolve(raw)?)),
                };
                Ok(SelectItem {
                    value,
                    alias: item.alias,
                })
            })
            .collect()
    }

    /// Checks what the grammar alone does not: one name per result member, and that a query
    /// that aggregates or groups selects only grouped paths besides its aggregates.
    fn validate(&self, q: &Query, star_at: usize, item_ats: &[usize]) -> PResult<()> {
        let Select::Items(items) = &q.select else {
            if !q.group_by.is_empty() {
                return Err(self.err(ParseErrorKind::StarWithGroupBy, star_at));
            }
            return Ok(());
        };
        let at = |i: usize| item_ats.get(i).copied().unwrap_or(star_at);
        let names = q.select.names();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(self.err(ParseErrorKind::DuplicateName(name.clone()), at(i)));
            }
        }
        let aggregates = items
            .iter()
            .any(|i| matches!(i.value, Projection::Aggregate(_)));
        if aggregates || !q.group_by.is_empty() {
            for (i, item) in items.iter().enumerate() {
                if let Projection::Path(p) = &item.value
                    && !q.group_by.contains(p)
                {
                    let written = p.to_string();
                    return Err(self.err(ParseErrorKind::NotGrouped(written), at(i)));
                }
            }
        }
        Ok(())
    }

    // ---- paths

    /// A path starting at the current token (a word).
    fn raw_path_here(&mut self, what: &str) -> PResult<RawPath> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Word(w) if !names::is_reserved(&w) => {
                self.bump();
                self.raw_path(w, at)
            }
            _ => Err(self.expected(what)),
        }
    }

    /// The rest of a path whose first word (already consumed) is `first`.
    fn raw_path(&mut self, first: String, at: usize) -> PResult<RawPath> {
        let mut segments = vec![Segment::Key(first)];
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.bump();
                    let Tok::Word(w) = self.peek().clone() else {
                        return Err(self.expected("a property name after '.'"));
                    };
                    self.bump();
                    segments.push(Segment::Key(w));
                }
                Tok::LBracket => {
                    self.bump();
                    let segment = match self.peek() {
                        Tok::Str(s) => Segment::Key(s.clone()),
                        Tok::Num(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                            Some(i) => Segment::Index(i),
                            None => {
                                return Err(self.expected("an array index from 0 to 4294967295"));
                            }
                        },
                        _ => {
                            return Err(self
                                .expected("a quoted property name or an array index in brackets"));
                        }
                    };
                    self.bump();
                    segments.push(segment);
                    self.expect(&Tok::RBracket, "']'")?;
                }
                _ => break,
            }
        }
        Ok(RawPath {
            segments,
            at,
            end: self.prev_end(),
        })
    }

    /// Strips the collection prefix and puts the fixed names in canonical case.
    fn resolve(&self, raw: RawPath) -> PResult<Path> {
        let written = || self.text[raw.at..raw.end.max(raw.at)].to_owned();
        let is =
            |s: &Segment, name: &str| matches!(s, Segment::Key(k) if k.eq_ignore_ascii_case(name));
        let mut segments = raw.segments;
        let n = segments.len();
        if n > 1 && is(&segments[0], "devices") {
            let (strip, refers_to) = if is(&segments[1], "modules") {
                (2, Collection::Modules)
            } else if is(&segments[1], "jobs") {
                (2, Collection::Jobs)
            } else {
                (1, Collection::Devices)
            };
            if strip == n {
                return Err(self.err(ParseErrorKind::CollectionAsPath(written()), raw.at));
            }
            if refers_to != self.collection {
                return Err(self.err(
                    ParseErrorKind::OtherCollection {
                        path: written(),
                        collection: self.collection.name().to_owned(),
                    },
                    raw.at,
                ));
            }
            segments.drain(..strip);
        }
        if let Some(Segment::Key(first)) = segments.first_mut() {
            let canonical = names::canonical_top_level(self.collection, first).to_owned();
            *first = canonical;
        }
        if let [Segment::Key(parent), Segment::Key(child), ..] = segments.as_mut_slice() {
            let canonical = names::canonical_nested(self.collection, parent, child).to_owned();
            *child = canonical;
        }
        Path::new(segments)
            .ok_or_else(|| self.err(ParseErrorKind::CollectionAsPath(written()), raw.at))
    }

    // ---- expressions

    fn or(&mut self) -> PResult<E> {
        self.enter()?;
        let mut left = self.and()?;
        while self.is_word("OR") {
            let at = self.at();
            self.bump();
            let right = self.and()?;
            left = self.binary(BinaryOp::Or, left, right, at)?;
        }
        self.leave();
        Ok(left)
    }

    fn and(&mut self) -> PResult<E> {
        let mut left = self.not()?;
        while self.is_word("AND") {
            let at = self.at();
            self.bump();
            let right = self.not()?;
            left = self.binary(BinaryOp::And, left, right, at)?;
        }
        Ok(left)
    }

    fn binary(&self, op: BinaryOp, left: E, right: E, at: usize) -> PResult<E> {
        let depth = 1 + left.depth.max(right.depth);
        self.node(
            Expr::Binary {
                op,
                left: Box::new(left.expr),
                right: Box::new(right.expr),
            },
            depth,
            at,
        )
    }

    fn not(&mut self) -> PResult<E> {
        if !self.is_word("NOT") {
            return self.comparison();
        }
        let at = self.at();
        self.bump();
        self.enter()?;
        let inner = self.not()?;
        self.leave();
        self.node(Expr::Not(Box::new(inner.expr)), inner.depth + 1, at)
    }

    fn comparison_op(&self) -> Option<BinaryOp> {
        Some(match self.peek() {
            Tok::Eq => BinaryOp::Eq,
            Tok::Ne => BinaryOp::Ne,
            Tok::Lt => BinaryOp::Lt,
            Tok::Le => BinaryOp::Le,
            Tok::Gt => BinaryOp::Gt,
            Tok::Ge => BinaryOp::Ge,
            _ => return None,
        })
    }

    /// `IN`, `NIN` or `NOT IN` here: whether it is negated.
    fn membership_op(&self) -> Option<bool> {
        if self.is_word("IN") {
            Some(false)
        } else if self.is_word("NIN") || (self.is_word("NOT") && self.is_word_at(1, "IN")) {
            Some(true)
        } else {
            None
        }
    }

    /// Gives the precise error for infix constructs of other SQL dialects.
    fn refuse_foreign_infix(&self) -> PResult<()> {
        let negated = self.is_word("NOT");
        let n = usize::from(negated);
        if self.is_word_at(n, "LIKE") {
            return Err(self.unsupported("LIKE", Some("Use STARTSWITH, ENDSWITH or CONTAINS.")));
        }
        if self.is_word_at(n, "BETWEEN") {
            return Err(self.unsupported("BETWEEN", Some("Use >= and <= joined by AND.")));
        }
        if self.is_word("IS") {
            return Err(self.unsupported(
                "IS NULL / IS NOT NULL",
                Some("Use IS_NULL(path), IS_DEFINED(path) or = null."),
            ));
        }
        Ok(())
    }

    fn comparison(&mut self) -> PResult<E> {
        let left = self.additive()?;
        self.refuse_foreign_infix()?;
        let result = if let Some(op) = self.comparison_op() {
            let at = self.at();
            self.bump();
            let right = self.additive()?;
            self.binary(op, left, right, at)?
        } else if let Some(negated) = self.membership_op() {
            let at = self.at();
            if self.is_word("NOT") {
                self.bump();
            }
            self.bump();
            let list = self.list()?;
            let depth = left.depth + 1;
            self.node(
                Expr::In {
                    value: Box::new(left.expr),
                    list,
                    negated,
                },
                depth,
                at,
            )?
        } else {
            return Ok(left);
        };
        self.refuse_foreign_infix()?;
        if self.comparison_op().is_some() || self.membership_op().is_some() {
            return Err(self.err(ParseErrorKind::ChainedComparison, self.at()));
        }
        Ok(result)
    }

    fn list(&mut self) -> PResult<Vec<Constant>> {
        if self.peek() != &Tok::LBracket {
            return Err(self.err(
                ParseErrorKind::BadList(
                    "IN and NIN must be followed by a list of constants in brackets, like IN ['a', 'b'].".to_owned(),
                ),
                self.at(),
            ));
        }
        match self.constant()? {
            Constant::Array(items) => Ok(items),
            // `constant` read a bracket, so it made an array.
            other => Ok(vec![other]),
        }
    }

    /// A constant: string, number (with an optional minus), keyword constant, or array of
    /// constants.
    fn constant(&mut self) -> PResult<Constant> {
        let at = self.at();
        match self.bump() {
            Tok::Str(s) => Ok(Constant::String(s)),
            Tok::Num(n) => Ok(Constant::Number(n)),
            Tok::Minus => match self.bump() {
                Tok::Num(n) => Ok(Constant::Number(negate(&n))),
                _ => Err(self.not_constant(at)),
            },
            Tok::Word(w) => keyword_constant(&w).ok_or_else(|| self.not_constant(at)),
            Tok::LBracket => {
                self.enter()?;
                let mut items = Vec::new();
                if self.peek() != &Tok::RBracket {
                    loop {
                        items.push(self.constant()?);
                        if self.peek() != &Tok::Comma {
                            break;
                        }
                        self.bump();
                    }
                }
                self.expect(&Tok::RBracket, "',' or ']'")?;
                self.leave();
                Ok(Constant::Array(items))
            }
            _ => Err(self.not_constant(at)),
        }
    }

    fn not_constant(&self, at: usize) -> ParseError {
        self.err(
            ParseErrorKind::BadList(
                "Lists and arrays can hold only constants: strings, numbers, true, false, null, undefined and arrays."
                    .to_owned(),
            ),
            at,
        )
    }

    fn additive(&mut self) -> PResult<E> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinaryOp::Add,
                Tok::Minus => BinaryOp::Sub,
                _ => return Ok(left),
            };
            let at = self.at();
            self.bump();
            let right = self.multiplicative()?;
            left = self.binary(op, left, right, at)?;
        }
    }

    fn multiplicative(&mut self) -> PResult<E> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinaryOp::Mul,
                Tok::Slash => BinaryOp::Div,
                Tok::Percent => BinaryOp::Rem,
                _ => return Ok(left),
            };
            let at = self.at();
            self.bump();
            let right = self.unary()?;
            left = self.binary(op, left, right, at)?;
        }
    }

    fn unary(&mut self) -> PResult<E> {
        if self.peek() != &Tok::Minus {
            return self.primary();
        }
        let at = self.at();
        if let Tok::Num(n) = self.peek_at(1).clone() {
            self.bump();
            self.bump();
            return self.node(Expr::Constant(Constant::Number(negate(&n))), 1, at);
        }
        self.bump();
        self.enter()?;
        let inner = self.unary()?;
        self.leave();
        self.node(Expr::Negate(Box::new(inner.expr)), inner.depth + 1, at)
    }

    fn primary(&mut self) -> PResult<E> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Num(_) | Tok::Str(_) | Tok::LBracket => {
                let c = self.constant()?;
                self.node(Expr::Constant(c), 1, at)
            }
            Tok::LParen => {
                self.bump();
                let inner = self.or()?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Word(w) => {
                if let Some(c) = keyword_constant(&w) {
                    self.bump();
                    return self.node(Expr::Constant(c), 1, at);
                }
                if self.peek_at(1) == &Tok::LParen {
                    return self.call(w, at);
                }
                if w.eq_ignore_ascii_case("SELECT") {
                    return Err(self.unsupported("A subquery", None));
                }
                if names::is_reserved(&w) {
                    return Err(self.expected("an expression"));
                }
                self.bump();
                let raw = self.raw_path(w, at)?;
                let path = self.resolve(raw)?;
                self.node(Expr::Path(path), 1, at)
            }
            _ => Err(self.expected("an expression")),
        }
    }

    fn call(&mut self, name: String, at: usize) -> PResult<E> {
        let Some(function) = Function::from_name(&name) else {
            let upper = name.to_ascii_uppercase();
            if ["COUNT", "AVG", "SUM", "MIN", "MAX"].contains(&upper.as_str()) {
                return Err(self.err(ParseErrorKind::AggregateOutsideSelect(upper), at));
            }
            if upper == "EXISTS" {
                return Err(self.unsupported("EXISTS", None));
            }
            return Err(self.err(ParseErrorKind::UnsupportedFunction { name }, at));
        };
        self.bump();
        self.bump();
        let mut args = Vec::new();
        let mut depth = 1;
        if self.peek() != &Tok::RParen {
            loop {
                let arg = self.or()?;
                depth = depth.max(arg.depth + 1);
                args.push(arg.expr);
                if self.peek() != &Tok::Comma {
                    break;
                }
                self.bump();
            }
        }
        self.expect(&Tok::RParen, "',' or ')'")?;
        if args.len() != function.arity() {
            return Err(self.err(
                ParseErrorKind::WrongArgumentCount {
                    function: function.name().to_owned(),
                    expected: function.arity(),
                    found: args.len(),
                },
                at,
            ));
        }
        self.node(Expr::Call { function, args }, depth, at)
    }
}

fn keyword_constant(w: &str) -> Option<Constant> {
    Some(match w.to_ascii_lowercase().as_str() {
        "true" => Constant::Bool(true),
        "false" => Constant::Bool(false),
        "null" => Constant::Null,
        "undefined" => Constant::Undefined,
        _ => return None,
    })
}

/// `-n` for a literal `n` (never negative itself).
fn negate(n: &serde_json::Number) -> serde_json::Number {
    if let Some(u) = n.as_u64() {
        if let Some(i) = 0i64.checked_sub_unsigned(u) {
            return i.into();
        }
        // Beyond i64: a float, like any literal that large.
        return serde_json::Number::from_f64(-(u as f64)).unwrap_or_else(|| 0.into());
    }
    n.as_f64()
        .and_then(|f| serde_json::Number::from_f64(-f))
        .unwrap_or_else(|| n.clone())
}
