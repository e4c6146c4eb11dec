//! Turns the text catalog (`text/*.txt`, one file per language) into code: the `Text`
//! enum of every key in `en.txt`, and the list of language files, embedded with
//! `include_str!`. A new language is one new file; a new key is a line in every file.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn variant_of(key: &str) -> String {
    key.split(['.', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut characters = part.chars();
            characters.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + characters.as_str()
            })
        })
        .collect()
}

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let text_dir = Path::new(&manifest).join("text");
    println!("cargo:rerun-if-changed={}", text_dir.display());
    let mut files: Vec<_> = fs::read_dir(&text_dir)
        .expect("core/text")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
        .collect();
    files.sort();
    let reference = fs::read_to_string(text_dir.join("en.txt")).expect("core/text/en.txt");
    let keys: Vec<&str> = reference
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('@'))
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key.trim()))
        .collect();

    let mut code = String::from(
        "/// A key of the text catalog (`core/text/en.txt`), one variant per line.\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n\
         pub enum Text {\n",
    );
    for key in &keys {
        let _ = writeln!(code, "    /// `{key}`\n    {},", variant_of(key));
    }
    code.push_str("}\n\nimpl Text {\n    /// Every key, in `en.txt`'s order.\n    pub const ALL: &[Text] = &[\n");
    for key in &keys {
        let _ = writeln!(code, "        Text::{},", variant_of(key));
    }
    code.push_str("    ];\n\n    /// The key as the catalog files spell it.\n    pub fn key(self) -> &'static str {\n        match self {\n");
    for key in &keys {
        let _ = writeln!(code, "            Text::{} => {key:?},", variant_of(key));
    }
    code.push_str("        }\n    }\n}\n\n/// (language code, file text) of every catalog file.\npub(crate) const CATALOG_FILES: &[(&str, &str)] = &[\n");
    for path in &files {
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("file name");
        let _ = writeln!(
            code,
            "    ({stem:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("text_catalog.rs");
    fs::write(out, code).expect("write text_catalog.rs");
}
