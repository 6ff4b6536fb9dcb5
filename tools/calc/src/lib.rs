//! `calc`: evaluate an arithmetic expression.
//!
//! A recursive-descent parser over `+ - * / % ^`, parentheses, unary minus,
//! the constants `pi` and `e`, and a few functions. Bad input is rejected
//! with a message that names the column, so a model can fix its call.

use serde::Deserialize;
use serde_json::json;
use warden_guest::{Tool, ToolSpec, tool};

/// Longest expression accepted, in bytes.
const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, unary operators and powers accepted; keeps
/// a hostile expression from overflowing the guest's stack.
const MAX_DEPTH: usize = 64;

struct Calc;

impl Tool for Calc {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "calc",
            "Evaluate an arithmetic expression exactly as written and return the number. \
             Supports + - * / % ^ (power), parentheses, unary minus, the constants pi and e, \
             and sqrt, abs, ln, log10, exp, sin, cos, tan, floor, ceil, round, min, max.",
            json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "description": "For example `(17 * 23) + 4` or `sqrt(2) ^ 2`.",
                        "maxLength": MAX_LEN,
                    }
                },
                "required": ["expression"],
                "additionalProperties": false,
            }),
        )]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            expression: String,
        }
        if name != "calc" {
            return Err(format!("this component provides `calc`, not `{name}`"));
        }
        let args: Args = tool::parse_arguments(&name, &arguments)?;
        evaluate(&args.expression).map(format_number)
    }
}

warden_guest::export_tool!(Calc);

/// Evaluate `expression`, or say what is wrong with it and where.
pub fn evaluate(expression: &str) -> Result<f64, String> {
    if expression.len() > MAX_LEN {
        return Err(format!(
            "expression is {} bytes long; the limit is {MAX_LEN}",
            expression.len()
        ));
    }
    let tokens = tokenize(expression)?;
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
        end: expression.chars().count() + 1,
    };
    let value = parser.expr()?;
    if let Some(token) = parser.peek() {
        return Err(format!(
            "unexpected {} at column {}",
            token.kind.describe(),
            token.column
        ));
    }
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("the result is not a finite number ({value})"))
    }
}

/// Integers print without a fraction; everything else in the shortest form
/// that reads back as the same `f64`.
pub fn format_number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Number(f64),
    Ident(String),
    Op(char),
    Open,
    Close,
    Comma,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Number(n) => format!("number `{}`", format_number(*n)),
            Kind::Ident(name) => format!("name `{name}`"),
            Kind::Op(op) => format!("`{op}`"),
            Kind::Open => "`(`".to_string(),
            Kind::Close => "`)`".to_string(),
            Kind::Comma => "`,`".to_string(),
        }
    }
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// 1-based, in characters.
    column: usize,
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                // Exponent: 1e3, 2.5E-4.
                if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                    let mut j = i + 1;
                    if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                        j += 1;
                    }
                    if j < chars.len() && chars[j].is_ascii_digit() {
                        i = j;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let value = text
                    .parse::<f64>()
                    .map_err(|_| format!("`{text}` at column {column} is not a number"))?;
                tokens.push(Token {
                    kind: Kind::Number(value),
                    column,
                });
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Ident(chars[start..i].iter().collect()),
                    column,
                });
                continue;
            }
            '+' | '-' | '*' | '/' | '%' | '^' => Kind::Op(c),
            '×' => Kind::Op('*'),
            '÷' => Kind::Op('/'),
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            other => {
                return Err(format!("unexpected character `{other}` at column {column}"));
            }
        };
        tokens.push(Token { kind, column });
        i += 1;
    }
    // `**` is a common spelling of power.
    let mut merged: Vec<Token> = Vec::with_capacity(tokens.len());
    for token in tokens {
        if token.kind == Kind::Op('*')
            && merged
                .last()
                .is_some_and(|last| last.kind == Kind::Op('*') && last.column + 1 == token.column)
        {
            merged.last_mut().expect("checked above").kind = Kind::Op('^');
        } else {
            merged.push(token);
        }
    }
    Ok(merged)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    depth: usize,
    /// Column just past the input, for "unexpected end" messages.
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        token
    }

    fn eat(&mut self, kind: &Kind) -> bool {
        if self.peek().is_some_and(|t| &t.kind == kind) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(format!("expression nests deeper than {MAX_DEPTH} levels"))
        } else {
            Ok(())
        }
    }

    // expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<f64, String> {
        let mut value = self.term()?;
        loop {
            if self.eat(&Kind::Op('+')) {
                value += self.term()?;
            } else if self.eat(&Kind::Op('-')) {
                value -= self.term()?;
            } else {
                return Ok(value);
            }
        }
    }

    // term := unary (('*' | '/' | '%') unary)*
    fn term(&mut self) -> Result<f64, String> {
        let mut value = self.unary()?;
        loop {
            let column = self.peek().map_or(self.end, |t| t.column);
            if self.eat(&Kind::Op('*')) {
                value *= self.unary()?;
            } else if self.eat(&Kind::Op('/')) {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(format!("division by zero at column {column}"));
                }
                value /= divisor;
            } else if self.eat(&Kind::Op('%')) {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(format!("remainder by zero at column {column}"));
                }
                value %= divisor;
            } else {
                return Ok(value);
            }
        }
    }

    // unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<f64, String> {
        self.enter()?;
        let value = if self.eat(&Kind::Op('-')) {
            -self.unary()?
        } else if self.eat(&Kind::Op('+')) {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(value)
    }

    // power := primary ('^' unary)?    (right-associative: 2^3^2 = 2^9)
    fn power(&mut self) -> Result<f64, String> {
        let base = self.primary()?;
        if self.eat(&Kind::Op('^')) {
            Ok(base.powf(self.unary()?))
        } else {
            Ok(base)
        }
    }

    // primary := number | '(' expr ')' | name | name '(' expr (',' expr)* ')'
    fn primary(&mut self) -> Result<f64, String> {
        let end = self.end;
        let Some(token) = self.next() else {
            return Err(format!(
                "expected a number, `(` or a function at column {end} but the expression ended"
            ));
        };
        let column = token.column;
        match token.kind.clone() {
            Kind::Number(value) => Ok(value),
            Kind::Open => {
                let value = self.expr()?;
                self.close(column)?;
                Ok(value)
            }
            Kind::Ident(name) => self.name(&name, column),
            other => Err(format!(
                "unexpected {} at column {column}; expected a number, `(` or a function",
                other.describe()
            )),
        }
    }

    fn close(&mut self, open_column: usize) -> Result<(), String> {
        match self.next() {
            Some(Token {
                kind: Kind::Close, ..
            }) => Ok(()),
            Some(token) => Err(format!(
                "expected `)` to close the `(` at column {open_column}, found {} at column {}",
                token.kind.describe(),
                token.column
            )),
            None => Err(format!(
                "the `(` at column {open_column} is not closed: add `)` at column {}",
                self.end
            )),
        }
    }

    fn name(&mut self, name: &str, column: usize) -> Result<f64, String> {
        match name {
            "pi" | "PI" => return Ok(std::f64::consts::PI),
            "e" | "E" => return Ok(std::f64::consts::E),
            _ => {}
        }
        let arity = match name {
            "min" | "max" => 2,
            "sqrt" | "abs" | "ln" | "log10" | "exp" | "sin" | "cos" | "tan" | "floor" | "ceil"
            | "round" => 1,
            _ => return Err(format!("unknown name `{name}` at column {column}")),
        };
        if !self.eat(&Kind::Open) {
            return Err(format!(
                "`{name}` at column {column} is a function: write `{name}(...)`"
            ));
        }
        self.enter()?;
        let mut args = vec![self.expr()?];
        while self.eat(&Kind::Comma) {
            args.push(self.expr()?);
        }
        self.close(column + name.chars().count())?;
        self.depth -= 1;
        if args.len() != arity {
            return Err(format!(
                "`{name}` at column {column} takes {arity} argument{}, got {}",
                if arity == 1 { "" } else { "s" },
                args.len()
            ));
        }
        let x = args[0];
        let value = match name {
            "sqrt" if x < 0.0 => {
                return Err(format!(
                    "`sqrt` at column {column} of a negative number ({})",
                    format_number(x)
                ));
            }
            "ln" | "log10" if x <= 0.0 => {
                return Err(format!(
                    "`{name}` at column {column} of a number that is not positive ({})",
                    format_number(x)
                ));
            }
            "sqrt" => x.sqrt(),
            "abs" => x.abs(),
            "ln" => x.ln(),
            "log10" => x.log10(),
            "exp" => x.exp(),
            "sin" => x.sin(),
            "cos" => x.cos(),
            "tan" => x.tan(),
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "round" => x.round(),
            "min" => x.min(args[1]),
            "max" => x.max(args[1]),
            _ => unreachable!("arity table and evaluation table list the same names"),
        };
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => format_number(v),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(eval("(17 * 23) + 4"), "395");
        assert_eq!(eval("1 + 2 * 3"), "7");
        assert_eq!(eval("2 ^ 3 ^ 2"), "512");
        assert_eq!(eval("2 ** 10"), "1024");
        assert_eq!(eval("-2 ^ 2"), "-4");
        assert_eq!(eval("10 - 4 - 3"), "3");
        assert_eq!(eval("7 % 4"), "3");
        assert_eq!(eval("1 / 4"), "0.25");
        assert_eq!(eval("1.5e3 + 2E-1"), "1500.2");
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(eval("sqrt(16) + abs(-2)"), "6");
        assert_eq!(eval("max(3, min(10, 7))"), "7");
        assert_eq!(eval("round(pi * 100)"), "314");
        assert_eq!(eval("floor(e)"), "2");
    }

    #[test]
    fn bad_input_says_where() {
        assert_eq!(
            eval("1 +"),
            "error: expected a number, `(` or a function at column 4 but the expression ended"
        );
        assert_eq!(
            eval("(1 + 2"),
            "error: the `(` at column 1 is not closed: add `)` at column 7"
        );
        assert_eq!(eval("1 + 2)"), "error: unexpected `)` at column 6");
        assert_eq!(eval("2 $ 3"), "error: unexpected character `$` at column 3");
        assert_eq!(eval("1 / (2 - 2)"), "error: division by zero at column 3");
        assert_eq!(eval("foo(1)"), "error: unknown name `foo` at column 1");
        assert_eq!(
            eval("sqrt(-1)"),
            "error: `sqrt` at column 1 of a negative number (-1)"
        );
        assert_eq!(
            eval("max(1)"),
            "error: `max` at column 1 takes 2 arguments, got 1"
        );
        assert_eq!(
            eval("sqrt 4"),
            "error: `sqrt` at column 1 is a function: write `sqrt(...)`"
        );
        assert_eq!(
            eval("10 ^ 400"),
            "error: the result is not a finite number (inf)"
        );
        assert_eq!(
            eval(""),
            "error: expected a number, `(` or a function at column 1 but the expression ended"
        );
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(eval(&deep).starts_with("error: expression is"));
        let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
        assert_eq!(eval(&deep), "error: expression nests deeper than 64 levels");
        let minus = format!("{}1", "-".repeat(1000));
        assert_eq!(
            eval(&minus),
            "error: expression nests deeper than 64 levels"
        );
    }

    #[test]
    fn tool_interface() {
        assert_eq!(
            Calc::invoke("calc".into(), r#"{"expression": "6 * 7"}"#.into()),
            Ok("42".into())
        );
        let err = Calc::invoke("calc".into(), r#"{"expr": "6 * 7"}"#.into()).unwrap_err();
        assert!(err.contains("unknown field `expr`"), "{err}");
        let spec = &Calc::describe()[0];
        let schema: serde_json::Value = serde_json::from_str(&spec.parameters_schema).unwrap();
        assert_eq!(schema["required"][0], "expression");
    }
}
