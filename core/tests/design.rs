//! Every comment that cites the design document points at something in it:
//! "DESIGN.md, invariant N" (or "invariants N and M") at a numbered invariant,
//! `DESIGN.md, "Title"` at a heading.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// What `DESIGN.md, ` is followed by in `text`, each cut at the end of its line.
fn citations(text: &str) -> Vec<&str> {
    text.match_indices("DESIGN.md, ")
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest.split('\n').next().unwrap_or("")
        })
        .collect()
}

#[test]
fn every_citation_of_the_design_document_points_into_it() {
    let design = fs::read_to_string(Path::new(ROOT).join("DESIGN.md")).expect("DESIGN.md");
    let mut files = Vec::new();
    sources(Path::new(ROOT), &mut files);
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in files {
        // The document itself and this test speak of citations, they make none.
        if file.ends_with("DESIGN.md") || file.ends_with("core/tests/design.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap_or_default();
        for cited in citations(&text) {
            let ok = if let Some(numbers) = cited
                .strip_prefix("invariants ")
                .or_else(|| cited.strip_prefix("invariant "))
            {
                let listed: String = numbers
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || " ,and".contains(*c))
                    .collect();
                let numbers: Vec<&str> = listed
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|n| !n.is_empty())
                    .collect();
                !numbers.is_empty()
                    && numbers
                        .iter()
                        .all(|n| design.contains(&format!("\n{n}. **")))
            } else if let Some(title) = cited.strip_prefix('"') {
                let title = title.split('"').next().unwrap_or("");
                design.contains(&format!("# {title}\n"))
            } else {
                false
            };
            checked += 1;
            if !ok {
                broken.push(format!("{}: DESIGN.md, {cited}", file.display()));
            }
        }
    }
    assert!(checked >= 6, "only {checked} citations found");
    assert!(
        broken.is_empty(),
        "citations pointing nowhere:\n{}",
        broken.join("\n")
    );
}
