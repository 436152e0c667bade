//! The benchmarks' printed report: a titled table in aligned columns, its
//! notes and the run's wall time (one layout for every bench).

use std::time::Duration;

/// Prints `rows` under `header` as `==== TITLE ====` and a ruled table,
/// then each note and the whole run's time.
pub fn print_table<const N: usize>(
    title: &str,
    header: [&str; N],
    rows: &[[String; N]],
    notes: &[String],
    took: Duration,
) {
    let header = header.map(str::to_owned);
    let rows: Vec<&[String; N]> = std::iter::once(&header).chain(rows).collect();
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    println!("\n==== {title} ====");
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join(" │ ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
            println!("{}", rule.join("─┼─"));
        }
    }
    for note in notes {
        println!("note: {note}");
    }
    println!("(whole run: {:.0} s)", took.as_secs_f64());
}
