//! Layering: the workspace's dependency edges point one way, at two scales.
//!
//! 1. **Crates.** Every workspace crate's `Cargo.toml` (normal, build and target-specific
//!    dependencies; dev-dependencies are exempt, so a server crate may start another in its
//!    tests) names only the workspace crates that the table of `docs/architecture.md` allows
//!    ([`ALLOWED`]). A crate missing from the table fails the test, so a new crate arrives with
//!    its rule.
//! 2. **Modules.** Inside each library crate, the file-modules (every `src/**/*.rs`, named by
//!    its module path; the crate root is `crate`) form no cycle. An edge `A -> B` exists when
//!    code of file `A` names a path that resolves to file `B`: `crate::b::..`, `super::..`,
//!    `self::..` or a child module's bare name, in a `use` tree or inline. Re-exports are
//!    followed (`crate::Error`, re-exported by `lib.rs` from `error`, is an edge to `error`).
//!    Not edges: references from a module to its own ancestors (a submodule lives inside its
//!    parent; `super::Inner` is the parent's scope, not a dependency), and anything compiled
//!    only under `cfg(test)` (test modules, inline or in their own file, and test-only items).
//!    Comments, doc links and string literals are not code.
//!
//! A crate with a cycle today that another change is removing is listed in [`KNOWN_CYCLES`]
//! with the exact set of modules in the cycle; the test fails both when a new cycle appears
//! and when a listed one is gone (so the entry is deleted as soon as the fix lands).
//!
//! The parser is a small Rust lexer (comments, strings, raw strings, chars and lifetimes) plus
//! a token scanner for `use` trees, paths, `mod` blocks and `cfg` attributes; it needs no
//! compiler and runs in milliseconds. Its own tests below prove each rule, including that a
//! cycle fails with the cycle spelled out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// --- 1. Crate edges ---------------------------------------------------------------------------

/// What a crate may depend on among the workspace's crates (normal and build dependencies).
enum Allowed {
    /// Exactly these workspace crates, or a subset.
    Only(&'static [&'static str]),
    /// Any workspace crate except the ones nothing may depend on ([`NO_DEPENDENTS`]).
    AnyLibrary,
    /// A harness (cluster tests, load generator): anything but [`NO_DEPENDENTS`], including the
    /// binary crate's library (style.md: "`tests`/`bench` may depend on everything").
    Harness,
}

/// The crate rules of `docs/architecture.md`: "sdk → proto; proxy → proto; broker → store +
/// proto; controller → proto. Nothing depends on a binary." `comet-vocab` (RocketMQ's names,
/// limits and formats) sits just above proto and below the servers and the CLI;
/// `comet-coalesce` (a socket wrapper) is a leaf the proxy, the broker (its internal link)
/// and the load generator share.
const ALLOWED: &[(&str, Allowed)] = &[
    ("comet-proto", Allowed::Only(&[])),
    ("comet-store", Allowed::Only(&[])),
    ("comet-coalesce", Allowed::Only(&[])),
    // Observability (metrics, health, logging, trace context): a leaf every server uses.
    ("comet-observe", Allowed::Only(&[])),
    // Security rules (signatures, ACLs, sealed secrets, TLS): a leaf, no protocol types.
    ("comet-auth", Allowed::Only(&[])),
    ("comet-vocab", Allowed::Only(&["comet-proto"])),
    (
        "comet-broker",
        Allowed::Only(&[
            "comet-store",
            "comet-proto",
            "comet-vocab",
            "comet-coalesce",
            "comet-observe",
            "comet-auth",
        ]),
    ),
    (
        "comet-proxy",
        Allowed::Only(&[
            "comet-proto",
            "comet-vocab",
            "comet-coalesce",
            "comet-observe",
            "comet-auth",
        ]),
    ),
    (
        "comet-controller",
        Allowed::Only(&["comet-proto", "comet-vocab", "comet-observe", "comet-auth"]),
    ),
    ("comet-sdk", Allowed::Only(&["comet-proto"])),
    // The binary crate `comet` wires the servers together; nothing but a harness uses it.
    ("comet", Allowed::AnyLibrary),
    ("comet-bench", Allowed::Harness),
    ("comet-tests", Allowed::Harness),
];

/// Crates no workspace crate may depend on (outside dev-dependencies): the load generator and
/// the test harness.
const NO_DEPENDENTS: &[&str] = &["comet-bench", "comet-tests"];

/// The binary crate: only a harness may depend on it.
const BINARY: &str = "comet";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the repository")
        .to_path_buf()
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

/// One workspace member: its package name, directory and manifest.
struct Member {
    name: String,
    dir: PathBuf,
    manifest: toml::Table,
}

fn workspace_members(root: &Path) -> (toml::Table, Vec<Member>) {
    let top = read_toml(&root.join("Cargo.toml"));
    let entries = top
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .expect("the root Cargo.toml lists [workspace] members");
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.as_str().expect("a member is a path");
        if let Some(parent) = entry.strip_suffix("/*") {
            let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(parent))
                .expect("a member glob names a directory")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect();
            found.sort();
            dirs.extend(found);
        } else {
            dirs.push(root.join(entry));
        }
    }
    let members = dirs
        .into_iter()
        .map(|dir| {
            let manifest = read_toml(&dir.join("Cargo.toml"));
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or_else(|| panic!("{} has a [package] name", dir.display()))
                .to_string();
            Member {
                name,
                dir,
                manifest,
            }
        })
        .collect();
    (top, members)
}

/// The package names a manifest depends on (normal, build and target-specific; not dev),
/// following `package = ".."` renames and `workspace = true` entries.
fn dependency_packages(manifest: &toml::Table, top: &toml::Table) -> BTreeSet<String> {
    let workspace_deps = top
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table());
    let mut tables: Vec<&toml::Table> = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        if let Some(t) = manifest.get(key).and_then(|t| t.as_table()) {
            tables.push(t);
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            for key in ["dependencies", "build-dependencies"] {
                if let Some(t) = target.get(key).and_then(|t| t.as_table()) {
                    tables.push(t);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    for table in tables {
        for (key, spec) in table {
            let renamed = |spec: &toml::Value| {
                spec.get("package")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
            };
            let mut name = renamed(spec);
            let from_workspace = spec
                .get("workspace")
                .and_then(|w| w.as_bool())
                .unwrap_or(false);
            if name.is_none() && from_workspace {
                name = workspace_deps.and_then(|d| d.get(key)).and_then(renamed);
            }
            out.insert(name.unwrap_or_else(|| key.clone()));
        }
    }
    out
}

/// Checks every member against [`ALLOWED`]; returns one line per violation.
fn crate_edge_violations(members: &[(String, BTreeSet<String>)]) -> Vec<String> {
    let names: BTreeSet<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = Vec::new();
    for (name, deps) in members {
        let Some((_, rule)) = ALLOWED.iter().find(|(n, _)| n == name) else {
            problems.push(format!(
                "{name}: not in the crate table of tests/tests/layering.rs (ALLOWED); add its \
                 rule from docs/architecture.md"
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| names.contains(d.as_str())) {
            let ok = match rule {
                Allowed::Only(list) => list.contains(&dep.as_str()),
                Allowed::AnyLibrary => !NO_DEPENDENTS.contains(&dep.as_str()) && dep != BINARY,
                Allowed::Harness => !NO_DEPENDENTS.contains(&dep.as_str()),
            };
            if !ok {
                problems.push(format!(
                    "{name} -> {dep}: not allowed by docs/architecture.md"
                ));
            }
        }
    }
    problems
}

#[test]
fn given_the_workspace_manifests_when_checked_should_follow_the_crate_table() {
    let root = repo_root();
    let (top, members) = workspace_members(&root);
    assert!(
        members.len() >= 8,
        "expected the whole workspace, found {} members",
        members.len()
    );
    let deps: Vec<(String, BTreeSet<String>)> = members
        .iter()
        .map(|m| (m.name.clone(), dependency_packages(&m.manifest, &top)))
        .collect();
    let problems = crate_edge_violations(&deps);
    assert!(problems.is_empty(), "crate edges:\n{}", problems.join("\n"));
}

#[test]
fn given_forbidden_crate_edges_when_checked_should_name_each_one() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let members = vec![
        ("comet-store".to_string(), set(&["comet-proto", "bytes"])),
        ("comet-sdk".to_string(), set(&["comet-proto"])),
        (
            "comet-proxy".to_string(),
            set(&["comet-proto", "comet-broker"]),
        ),
        ("comet-broker".to_string(), set(&["comet-store", "comet"])),
        ("comet".to_string(), set(&["comet-broker", "comet-bench"])),
        ("comet-tests".to_string(), set(&["comet", "comet-sdk"])),
        ("comet-bench".to_string(), set(&["comet-sdk"])),
        ("comet-proto".to_string(), set(&[])),
        ("comet-newcomer".to_string(), set(&[])),
    ];
    let problems = crate_edge_violations(&members);
    assert_eq!(
        problems,
        vec![
            "comet-store -> comet-proto: not allowed by docs/architecture.md",
            "comet-proxy -> comet-broker: not allowed by docs/architecture.md",
            "comet-broker -> comet: not allowed by docs/architecture.md",
            "comet -> comet-bench: not allowed by docs/architecture.md",
            "comet-newcomer: not in the crate table of tests/tests/layering.rs (ALLOWED); add \
             its rule from docs/architecture.md",
        ]
    );
}

#[test]
fn given_manifest_entries_when_read_should_follow_renames_and_skip_dev_dependencies() {
    let top: toml::Table = r#"
        [workspace.dependencies]
        proto-alias = { path = ".", package = "comet-proto" }
        comet-store = { path = "crates/store" }
    "#
    .parse()
    .expect("valid TOML");
    let manifest: toml::Table = r#"
        [dependencies]
        proto-alias = { workspace = true }
        comet-store = { workspace = true }
        [build-dependencies]
        gen = { path = "../gen", package = "comet-gen" }
        [target.'cfg(unix)'.dependencies]
        comet-unix = { path = "../unix" }
        [dev-dependencies]
        comet-broker = { path = "../broker" }
    "#
    .parse()
    .expect("valid TOML");
    let deps: Vec<String> = dependency_packages(&manifest, &top).into_iter().collect();
    assert_eq!(
        deps,
        vec!["comet-gen", "comet-proto", "comet-store", "comet-unix"]
    );
}

// --- 2. Module cycles -------------------------------------------------------------------------

/// A cycle present on main that another change is removing: the crate and the exact modules
/// of its strongly connected component. Delete the entry when the change lands (the test fails
/// while a listed cycle no longer exists).
struct KnownCycle {
    krate: &'static str,
    modules: &'static [&'static str],
}

/// Empty since issue 16: every library crate's modules import one way.
const KNOWN_CYCLES: &[KnownCycle] = &[];

/// A module path inside one crate: `[]` is the crate root, `["ha", "tracker"]` is `ha::tracker`.
type ModPath = Vec<String>;

fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_string()
    } else {
        path.join("::")
    }
}

mod lexer {
    //! Just enough of Rust's lexical grammar to find identifiers and `::` outside comments and
    //! literals.

    #[derive(Clone, Debug, PartialEq)]
    pub enum Tok {
        /// An identifier or keyword (`r#` stripped; `$crate` kept whole).
        Ident(String),
        /// `::`
        PathSep,
        /// Any other punctuation character.
        Punct(char),
        /// A string, char or number literal, or a lifetime.
        Other,
    }

    #[derive(Clone, Debug)]
    pub struct Token {
        pub tok: Tok,
        pub line: usize,
    }

    fn is_ident_start(c: char) -> bool {
        c == '_' || c.is_alphabetic()
    }

    fn is_ident_char(c: char) -> bool {
        c == '_' || c.is_alphanumeric()
    }

    pub fn lex(src: &str) -> Vec<Token> {
        let s: Vec<char> = src.chars().collect();
        let at = |i: usize| s.get(i).copied().unwrap_or('\0');
        let mut out = Vec::new();
        let mut line = 1;
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            if c == '\n' {
                line += 1;
                i += 1;
            } else if c.is_whitespace() {
                i += 1;
            } else if c == '/' && at(i + 1) == '/' {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            } else if c == '/' && at(i + 1) == '*' {
                let mut depth = 0usize;
                while i < s.len() {
                    if s[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if s[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if s[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            } else if let Some(end) = raw_string_end(&s, i) {
                line += s[i..end].iter().filter(|&&c| c == '\n').count();
                out.push(Token {
                    tok: Tok::Other,
                    line,
                });
                i = end;
            } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
                let start_line = line;
                i += if c == '"' { 1 } else { 2 };
                while i < s.len() && s[i] != '"' {
                    if s[i] == '\\' {
                        i += 1;
                    }
                    if at(i) == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token {
                    tok: Tok::Other,
                    line: start_line,
                });
            } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
                let q = if c == '\'' { i } else { i + 1 };
                if at(q + 1) == '\\' {
                    // An escaped char literal: '\n', '\u{..}', '\''.
                    i = q + 3;
                    while i < s.len() && s[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(q + 2) == '\'' {
                    i = q + 3;
                } else {
                    // A lifetime or a label.
                    i = q + 1;
                    while i < s.len() && is_ident_char(s[i]) {
                        i += 1;
                    }
                }
                out.push(Token {
                    tok: Tok::Other,
                    line,
                });
            } else if c.is_ascii_digit() {
                while i < s.len()
                    && (is_ident_char(s[i]) || (s[i] == '.' && at(i + 1).is_ascii_digit()))
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Other,
                    line,
                });
            } else if c == '$' && s[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']) {
                i += 6;
                out.push(Token {
                    tok: Tok::Ident("$crate".to_string()),
                    line,
                });
            } else if is_ident_start(c) {
                if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
                    i += 2;
                }
                let start = i;
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(s[start..i].iter().collect()),
                    line,
                });
            } else if c == ':' && at(i + 1) == ':' {
                out.push(Token {
                    tok: Tok::PathSep,
                    line,
                });
                i += 2;
            } else {
                out.push(Token {
                    tok: Tok::Punct(c),
                    line,
                });
                i += 1;
            }
        }
        out
    }

    /// If a raw string (`r"..."`, `r#"..."#`, `br".."`, `cr".."`) starts at `i`, the index just
    /// past it.
    fn raw_string_end(s: &[char], i: usize) -> Option<usize> {
        let mut j = i;
        if matches!(s.get(j), Some('b') | Some('c')) {
            j += 1;
        }
        if s.get(j) != Some(&'r') {
            return None;
        }
        j += 1;
        let mut hashes = 0;
        while s.get(j) == Some(&'#') {
            hashes += 1;
            j += 1;
        }
        if s.get(j) != Some(&'"') {
            return None;
        }
        j += 1;
        while j < s.len() {
            if s[j] == '"' && (1..=hashes).all(|k| s.get(j + k) == Some(&'#')) {
                return Some(j + 1 + hashes);
            }
            j += 1;
        }
        Some(s.len())
    }
}

use lexer::{Tok, Token};

/// A path found in one file, before resolution.
#[derive(Clone, Debug)]
struct RawRef {
    /// The module the code sits in (the file's module plus any inline `mod` blocks).
    scope: ModPath,
    /// The path's segments as written, starting with `crate`, `super`, `self` or a name.
    segments: Vec<String>,
    line: usize,
}

/// What one file contributes before resolution.
#[derive(Default, Debug)]
struct FileScan {
    refs: Vec<RawRef>,
    /// File-level `use` bindings: the name brought into scope and the path it names.
    imports: Vec<(String, RawRef)>,
    /// Child modules declared `#[cfg(test)] mod name;` (their files are test code).
    test_children: Vec<String>,
    /// The whole file is `#![cfg(test)]`.
    test_only: bool,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn punct(t: Option<&Token>, c: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(p)) if *p == c)
}

fn path_sep(t: Option<&Token>) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::PathSep))
}

/// The index just past the group opened at `open` (`(`, `[` or `{`), nesting all three.
fn group_end(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

/// The index just past the item or statement starting at `start`: its `;` or its body block.
fn item_end(toks: &[Token], start: usize) -> usize {
    let mut i = start;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('(' | '[') => i = group_end(toks, i),
            Tok::Punct('{') => return group_end(toks, i),
            // An attribute-less item cannot close its parent; stop there.
            Tok::Punct('}' | ')' | ']') => return i,
            _ => i += 1,
        }
    }
    toks.len()
}

/// Whether `cfg(<pred>)` (tokens of `pred`) holds only in test builds: `test` or `all(.., test,
/// ..)`. `any(test, feature = "x")` also holds outside tests, so it is not test-only.
fn cfg_is_test_only(pred: &[Token]) -> bool {
    if pred.len() == 1 && ident(pred.first()) == Some("test") {
        return true;
    }
    if ident(pred.first()) == Some("all") && punct(pred.get(1), '(') {
        let inner = &pred[2..pred.len().saturating_sub(1)];
        let mut depth = 0usize;
        let mut arg_start = 0;
        for (k, t) in inner.iter().enumerate() {
            match t.tok {
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') => depth = depth.saturating_sub(1),
                Tok::Punct(',') if depth == 0 => {
                    if cfg_is_test_only(&inner[arg_start..k]) {
                        return true;
                    }
                    arg_start = k + 1;
                }
                _ => {}
            }
        }
        return cfg_is_test_only(&inner[arg_start..]);
    }
    false
}

/// Scans one file (module path `file_mod`) for references, imports and test modules.
fn scan_file(file_mod: &[String], src: &str) -> FileScan {
    let toks = lexer::lex(src);
    let mut out = FileScan::default();
    // One entry per open `{`: the inline module it opens, if any.
    let mut frames: Vec<Option<String>> = Vec::new();
    let scope = |frames: &[Option<String>]| {
        let mut s = file_mod.to_vec();
        s.extend(frames.iter().flatten().cloned());
        s
    };
    let mut test_attr = false;
    let mut i = 0;
    while i < toks.len() {
        // Attributes: remember a test-only `cfg`, skip the rest.
        if punct(toks.get(i), '#') {
            let inner = punct(toks.get(i + 1), '!');
            let open = if inner { i + 2 } else { i + 1 };
            if punct(toks.get(open), '[') {
                let end = group_end(&toks, open);
                let body = &toks[open + 1..end.saturating_sub(1)];
                if ident(body.first()) == Some("cfg")
                    && punct(body.get(1), '(')
                    && cfg_is_test_only(&body[2..body.len().saturating_sub(1)])
                {
                    if inner && frames.is_empty() {
                        out.test_only = true;
                        return out;
                    }
                    test_attr = true;
                }
                i = end;
                continue;
            }
        }
        if test_attr {
            // The item under `#[cfg(test)]`: skip it, noting `mod name;` declarations.
            test_attr = false;
            let end = item_end(&toks, i);
            let item = &toks[i..end];
            if let Some(m) = item.iter().position(|t| ident(Some(t)) == Some("mod"))
                && let Some(name) = ident(item.get(m + 1))
                && punct(item.get(m + 2), ';')
                && frames.is_empty()
            {
                out.test_children.push(name.to_string());
            }
            i = end.max(i + 1);
            continue;
        }
        match &toks[i].tok {
            Tok::Punct('{') => {
                let inline = (i >= 2 && ident(toks.get(i - 2)) == Some("mod"))
                    .then(|| ident(toks.get(i - 1)).map(str::to_string))
                    .flatten();
                frames.push(inline);
                i += 1;
            }
            Tok::Punct('}') => {
                frames.pop();
                i += 1;
            }
            // `pub(crate)`, `pub(super)`, `pub(in crate::a)`: visibility, not a reference.
            Tok::Ident(kw) if kw == "pub" && punct(toks.get(i + 1), '(') => {
                i = group_end(&toks, i + 1);
            }
            Tok::Ident(kw) if kw == "use" => {
                let here = scope(&frames);
                let mut leaves = Vec::new();
                let mut j = i + 1;
                if !path_sep(toks.get(j)) {
                    parse_use_tree(&toks, &mut j, Vec::new(), &mut leaves);
                }
                for (segments, name, line) in leaves {
                    let r = RawRef {
                        scope: here.clone(),
                        segments,
                        line,
                    };
                    if let Some(name) = name
                        && frames.is_empty()
                    {
                        out.imports.push((name, r.clone()));
                    }
                    out.refs.push(r);
                }
                i = item_end(&toks, i);
            }
            Tok::Ident(first)
                if path_sep(toks.get(i + 1)) && !path_sep(toks.get(i.wrapping_sub(1))) =>
            {
                let mut segments = vec![first.clone()];
                let mut j = i + 1;
                while path_sep(toks.get(j)) {
                    match ident(toks.get(j + 1)) {
                        Some(s) => segments.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                out.refs.push(RawRef {
                    scope: scope(&frames),
                    segments,
                    line: toks[i].line,
                });
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// One leaf of a `use` tree: its full path, the name it binds (`None` for globs and `_`) and
/// its line.
type UseLeaf = (Vec<String>, Option<String>, usize);

fn parse_use_tree(toks: &[Token], i: &mut usize, mut prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    loop {
        let line = toks.get(*i).map_or(0, |t| t.line);
        match toks.get(*i).map(|t| &t.tok) {
            Some(Tok::Ident(seg)) => {
                prefix.push(seg.clone());
                *i += 1;
                if path_sep(toks.get(*i)) {
                    *i += 1;
                    continue;
                }
                let mut name = prefix.last().cloned();
                if ident(toks.get(*i)) == Some("as") {
                    name = ident(toks.get(*i + 1)).map(str::to_string);
                    *i += 2;
                }
                if prefix.last().map(String::as_str) == Some("self") {
                    prefix.pop();
                    if name.as_deref() == Some("self") {
                        name = prefix.last().cloned();
                    }
                }
                if name.as_deref() == Some("_") {
                    name = None;
                }
                out.push((prefix, name, line));
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((prefix, None, line));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while *i < toks.len() && !punct(toks.get(*i), '}') {
                    let before = *i;
                    parse_use_tree(toks, i, prefix.clone(), out);
                    if punct(toks.get(*i), ',') {
                        *i += 1;
                    }
                    if *i == before {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => return,
        }
    }
}

/// The module graph of one crate: file-modules and the edges between them, each edge with the
/// first place it is written.
#[derive(Debug, Default)]
struct ModGraph {
    nodes: BTreeSet<ModPath>,
    /// `from -> to -> (file, line)`.
    edges: BTreeMap<ModPath, BTreeMap<ModPath, (String, usize)>>,
}

/// The module path of a source file relative to the crate's source directory, or `None` for a
/// file that is not part of the library (the binary's `main.rs`, `bin/`).
fn module_of(rel: &str) -> Option<ModPath> {
    let rel = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    match parts.as_slice() {
        [only] if only == "lib" => return Some(Vec::new()),
        [only] if only == "main" => return None,
        [first, ..] if first == "bin" => return None,
        _ => {}
    }
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    Some(parts)
}

/// Builds the module graph of a crate from its source files (`src`-relative path, text).
fn build_graph(files: &[(String, String)]) -> ModGraph {
    let mut scans: BTreeMap<ModPath, (String, FileScan)> = BTreeMap::new();
    for (rel, text) in files {
        if let Some(m) = module_of(rel) {
            let scan = scan_file(&m, text);
            scans.insert(m, (rel.clone(), scan));
        }
    }
    // Test modules declared by file, and everything below them, are not part of the graph.
    let mut test_roots: Vec<ModPath> = Vec::new();
    for (m, (_, scan)) in &scans {
        if scan.test_only {
            test_roots.push(m.clone());
        }
        for child in &scan.test_children {
            let mut c = m.clone();
            c.push(child.clone());
            test_roots.push(c);
        }
    }
    scans.retain(|m, _| !test_roots.iter().any(|t| m.starts_with(t)));
    let nodes: BTreeSet<ModPath> = scans.keys().cloned().collect();

    let absolute = |r: &RawRef| -> Option<Vec<String>> {
        let segs = &r.segments;
        let first = segs.first()?.as_str();
        let mut base: Vec<String>;
        let rest: &[String];
        match first {
            "crate" | "$crate" => {
                base = Vec::new();
                rest = &segs[1..];
            }
            "super" => {
                base = r.scope.clone();
                let mut k = 0;
                while segs.get(k).map(String::as_str) == Some("super") {
                    base.pop()?;
                    k += 1;
                }
                rest = &segs[k..];
            }
            "self" => {
                base = r.scope.clone();
                rest = &segs[1..];
            }
            name => {
                // A bare path names a child module of its scope, or something outside the crate.
                let mut child = r.scope.clone();
                child.push(name.to_string());
                if !nodes.contains(&child) {
                    return None;
                }
                base = r.scope.clone();
                rest = segs;
            }
        }
        base.extend(rest.iter().cloned());
        Some(base)
    };
    let imports: BTreeMap<&ModPath, BTreeMap<&str, Vec<String>>> = scans
        .iter()
        .map(|(m, (_, scan))| {
            let map = scan
                .imports
                .iter()
                .filter_map(|(name, r)| absolute(r).map(|p| (name.as_str(), p)))
                .collect();
            (m, map)
        })
        .collect();
    // The file-module an absolute path lands in, following re-exports.
    let target = |mut path: Vec<String>| -> ModPath {
        for _ in 0..8 {
            let node = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| nodes.contains(p))
                .unwrap_or_default();
            let next = path
                .get(node.len())
                .and_then(|name| imports.get(&node)?.get(name.as_str()));
            match next {
                Some(reexport) if *reexport != path[..=node.len()] => {
                    let mut p = reexport.clone();
                    p.extend(path[node.len() + 1..].iter().cloned());
                    path = p;
                }
                _ => return node,
            }
        }
        Vec::new()
    };

    let mut graph = ModGraph {
        nodes: nodes.clone(),
        edges: BTreeMap::new(),
    };
    for (from, (file, scan)) in &scans {
        for r in &scan.refs {
            let Some(path) = absolute(r) else { continue };
            let to = target(path);
            // Self-references and references to an ancestor (a module's enclosing scope) are
            // not dependencies.
            if from.starts_with(&to) {
                continue;
            }
            graph
                .edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_insert_with(|| (file.clone(), r.line));
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(graph: &ModGraph) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        graph: &'a ModGraph,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a ModPath) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on_stack.insert(v);
        if let Some(out) = st.graph.edges.get(v) {
            for w in out.keys() {
                if !st.index.contains_key(w) {
                    visit(st, w);
                    let lw = st.low[w];
                    let lv = st.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if st.on_stack.contains(w) {
                    let iw = st.index[w];
                    let lv = st.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let all: BTreeSet<&ModPath> = graph
        .nodes
        .iter()
        .chain(graph.edges.keys())
        .chain(graph.edges.values().flat_map(|m| m.keys()))
        .collect();
    for v in all {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out.sort();
    st.out
}

/// One concrete cycle through the component's first module, each step with where it is written:
/// `a -> b (a.rs:3) -> a (b.rs:9)`.
fn spell_cycle(graph: &ModGraph, component: &[ModPath]) -> String {
    let members: BTreeSet<&ModPath> = component.iter().collect();
    let start = &component[0];
    // Shortest path start -> .. -> start inside the component (breadth first).
    let mut prev: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut closing = None;
    'search: while let Some(v) = queue.pop_front() {
        for w in graph.edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !members.contains(w) {
                continue;
            }
            if w == start {
                closing = Some(v);
                break 'search;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start];
    if let Some(mut v) = closing {
        let mut back = vec![v];
        while v != start {
            v = prev[v];
            back.push(v);
        }
        back.pop();
        back.reverse();
        path.extend(back);
    }
    path.push(start);
    let mut text = display(start);
    for pair in path.windows(2) {
        let (file, line) = &graph.edges[pair[0]][pair[1]];
        let _ = write!(text, " -> {} ({file}:{line})", display(pair[1]));
    }
    text
}

/// Reads a crate's library sources: every `.rs` file under its source directory.
fn library_sources(src_dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![src_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src_dir)
                    .expect("below the source directory")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                files.push((rel, text));
            }
        }
    }
    files.sort();
    files
}

/// The library's source directory of a member, if it has a library target.
fn library_dir(member: &Member) -> Option<PathBuf> {
    let lib_path = member
        .manifest
        .get("lib")
        .and_then(|l| l.get("path"))
        .and_then(|p| p.as_str())
        .map_or_else(|| member.dir.join("src/lib.rs"), |p| member.dir.join(p));
    lib_path
        .is_file()
        .then(|| lib_path.parent().map(Path::to_path_buf))
        .flatten()
}

/// Library crates that are one file by design (anything else with one module means the
/// parser missed the `mod` declarations).
const SINGLE_FILE_CRATES: &[&str] = &["comet-proto", "comet-coalesce"];

#[test]
fn given_each_library_crate_when_its_modules_are_graphed_should_have_no_cycle() {
    let root = repo_root();
    let (_, members) = workspace_members(&root);
    let mut problems = Vec::new();
    let mut seen_known = BTreeSet::new();
    let mut libraries = 0;
    for member in &members {
        let Some(src) = library_dir(member) else {
            continue;
        };
        libraries += 1;
        let graph = build_graph(&library_sources(&src));
        assert!(
            graph.nodes.len() > 1 || SINGLE_FILE_CRATES.contains(&member.name.as_str()),
            "{}: found only {} module(s) under {}",
            member.name,
            graph.nodes.len(),
            src.display()
        );
        for component in cycles(&graph) {
            let names: Vec<String> = component.iter().map(|m| display(m)).collect();
            let known = KNOWN_CYCLES.iter().position(|k| {
                k.krate == member.name
                    && k.modules
                        .iter()
                        .copied()
                        .eq(names.iter().map(|s| s.as_str()))
            });
            match known {
                Some(k) => {
                    seen_known.insert(k);
                }
                None => problems.push(format!(
                    "{}: modules in a cycle: {}\n  e.g. {}",
                    member.name,
                    names.join(", "),
                    spell_cycle(&graph, &component)
                )),
            }
        }
    }
    assert!(libraries >= 7, "found only {libraries} library crates");
    for (k, known) in KNOWN_CYCLES.iter().enumerate() {
        if !seen_known.contains(&k) {
            problems.push(format!(
                "{}: the cycle listed in KNOWN_CYCLES ({}) is gone: delete its entry",
                known.krate,
                known.modules.join(", ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "module layering:\n{}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod rules {
    //! The parser and the cycle finder on small inputs: each rule of the module doc, and a
    //! cycle that fails with its path spelled out.

    use super::*;

    fn m(s: &str) -> ModPath {
        if s == "crate" {
            Vec::new()
        } else {
            s.split("::").map(str::to_string).collect()
        }
    }

    fn graph_of(files: &[(&str, &str)]) -> ModGraph {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        build_graph(&files)
    }

    /// The edges as sorted `a -> b` lines (declaring `mod a;` is not an edge).
    fn edges(g: &ModGraph) -> Vec<String> {
        let mut lines: Vec<String> = g
            .edges
            .iter()
            .flat_map(|(a, out)| {
                out.keys()
                    .map(move |b| format!("{} -> {}", display(a), display(b)))
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn given_an_in_memory_graph_with_a_cycle_should_find_and_spell_it() {
        let mut g = ModGraph::default();
        for (a, b, line) in [("a", "b", 1), ("b", "c", 2), ("c", "a", 3), ("c", "d", 4)] {
            g.nodes.insert(m(a));
            g.nodes.insert(m(b));
            g.edges
                .entry(m(a))
                .or_default()
                .insert(m(b), (format!("{a}.rs"), line));
        }
        let found = cycles(&g);
        assert_eq!(found, vec![vec![m("a"), m("b"), m("c")]]);
        assert_eq!(
            spell_cycle(&g, &found[0]),
            "a -> b (a.rs:1) -> c (b.rs:2) -> a (c.rs:3)"
        );
        // Without the closing edge there is none.
        g.edges
            .get_mut(&m("c"))
            .expect("c has edges")
            .remove(&m("a"));
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn given_two_files_naming_each_other_should_report_a_cycle() {
        let g = graph_of(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::Thing;\npub struct Other;"),
            (
                "b.rs",
                "pub struct Thing;\n\nfn f() -> crate::a::Other { todo() }",
            ),
        ]);
        assert_eq!(edges(&g), vec!["a -> b", "b -> a"]);
        let found = cycles(&g);
        assert_eq!(found, vec![vec![m("a"), m("b")]]);
        assert_eq!(spell_cycle(&g, &found[0]), "a -> b (a.rs:1) -> a (b.rs:3)");
    }

    #[test]
    fn given_use_trees_and_super_paths_should_resolve_each_leaf() {
        let g = graph_of(&[
            ("lib.rs", "pub mod x; pub mod y; pub mod z; pub mod w;"),
            (
                "x/mod.rs",
                "mod inner;\nuse crate::{y::{self, A as B}, z::*};\n",
            ),
            ("x/inner.rs", "fn f() { super::super::w::go(); }"),
            ("y.rs", "pub struct A;"),
            ("z.rs", ""),
            ("w.rs", "pub fn go() {}"),
        ]);
        assert_eq!(edges(&g), vec!["x -> y", "x -> z", "x::inner -> w",]);
    }

    #[test]
    fn given_a_child_naming_its_parent_should_not_count_as_an_edge() {
        let g = graph_of(&[
            ("lib.rs", "mod store;"),
            (
                "store/mod.rs",
                "mod append;\npub use append::Appender;\npub struct Inner;",
            ),
            (
                "store/append.rs",
                "use super::Inner;\nuse crate::store::Inner as Again;\npub struct Appender;",
            ),
        ]);
        assert_eq!(edges(&g), vec!["store -> store::append"]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn given_test_code_comments_and_strings_should_not_count_as_edges() {
        let g = graph_of(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                r##"
                //! Uses [`crate::b::X`] in a doc link only.
                pub(crate) fn f() {} // crate::b::X
                /* crate::b::X /* nested */ crate::b::X */
                const S: &str = "crate::b::X";
                const R: &str = r#"crate::b::X "quoted" "#;
                const C: char = '"';
                fn g<'a>(x: &'a str) -> &'a str { x }
                pub(in crate::b) fn h() {}
                #[cfg(test)]
                fn helper() -> crate::b::X { crate::b::X }
                #[cfg(all(test, unix))]
                use crate::b::Y;
                #[cfg(test)]
                mod tests {
                    use crate::b::X;
                }
                #[cfg(test)]
                mod file_tests;
                "##,
            ),
            ("a/file_tests.rs", "use crate::b::X;"),
            ("b.rs", "use crate::a::f;"),
        ]);
        assert_eq!(edges(&g), vec!["b -> a"]);
        assert!(!g.nodes.contains(&m("a::file_tests")));
    }

    #[test]
    fn given_a_cfg_that_also_holds_outside_tests_should_count_its_edges() {
        let g = graph_of(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                "#[cfg(any(test, feature = \"fuzzing\"))]\nuse crate::b::X;",
            ),
            ("b.rs", ""),
        ]);
        assert!(edges(&g).contains(&"a -> b".to_string()));
    }

    #[test]
    fn given_a_reexport_should_point_the_edge_at_the_defining_module() {
        let g = graph_of(&[
            (
                "lib.rs",
                "mod error; mod a; mod b;\npub use error::Error;\npub use b::*;",
            ),
            ("error.rs", "pub enum Error {}"),
            (
                "a.rs",
                "fn f() -> crate::Error { loop {} }\nuse crate::Other;",
            ),
            ("b.rs", ""),
        ]);
        assert_eq!(
            edges(&g),
            vec!["a -> error", "crate -> b", "crate -> error"]
        );
    }

    #[test]
    fn given_an_inline_module_should_resolve_super_from_inside_it() {
        let g = graph_of(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                "mod inner {\n    use super::super::b::X;\n    use super::Local;\n}",
            ),
            ("b.rs", ""),
        ]);
        assert_eq!(edges(&g), vec!["a -> b"]);
    }

    #[test]
    fn given_a_binary_beside_the_library_should_leave_it_out() {
        let g = graph_of(&[
            ("lib.rs", "pub mod a;"),
            ("a.rs", ""),
            ("main.rs", "use comet::a;"),
            ("bin/tool.rs", ""),
        ]);
        assert_eq!(g.nodes, BTreeSet::from([m("crate"), m("a")]));
    }
}
