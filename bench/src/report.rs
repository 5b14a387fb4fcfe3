//! The report: a table on the terminal, a JSON file and a PNG chart
//! (throughput and p99 per scenario), drawn here with an 8x8 bitmap font so
//! that no system font or image tool is needed.

use std::path::Path;

use serde_json::{Value, json};

use crate::load::Outcome;

pub struct Row {
    pub name: String,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub cpu_s_per_1000: f64,
    pub peak_rss_mib: f64,
    pub ratio_to_ceiling: f64,
    pub unit: &'static str,
    /// Mails queued but not yet delivered when the scenario ended.
    pub mail_backlog: Option<u64>,
}

impl Row {
    pub fn from_outcome(outcome: &Outcome, ceiling: f64, unit: &'static str) -> Self {
        let ms = |q: f64| outcome.latency.value_at_quantile(q) as f64 / 1000.0;
        let per_second = outcome.per_second();
        Self {
            name: outcome.name.clone(),
            per_second,
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: outcome.latency.max() as f64 / 1000.0,
            errors: outcome.errors,
            cpu_s_per_1000: if outcome.requests > 0 {
                outcome.cpu_seconds * 1000.0 / outcome.requests as f64
            } else {
                0.0
            },
            peak_rss_mib: outcome.peak_rss_kib as f64 / 1024.0,
            ratio_to_ceiling: if ceiling > 0.0 {
                per_second / ceiling
            } else {
                0.0
            },
            unit,
            mail_backlog: None,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.name, "unit": self.unit, "per_second": round(self.per_second, 1),
            "p50_ms": round(self.p50_ms, 3), "p95_ms": round(self.p95_ms, 3), "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3), "errors": self.errors,
            "server_cpu_s_per_1000": round(self.cpu_s_per_1000, 4), "server_peak_rss_mib": round(self.peak_rss_mib, 1),
            "ratio_to_ceiling": round(self.ratio_to_ceiling, 3),
            "mails_queued_at_end": self.mail_backlog,
        })
    }
}

pub fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | per second | vs ceiling | p50 ms | p95 ms | p99 ms | max ms | errors | server CPU s / 1000 | server peak RSS MiB | mails queued at end |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} {} | {:.0} % | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.0} | {} |\n",
            r.name,
            r.per_second,
            r.unit,
            r.ratio_to_ceiling * 100.0,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.cpu_s_per_1000,
            r.peak_rss_mib,
            r.mail_backlog.map_or("–".to_owned(), |n| n.to_string())
        ));
    }
    out
}

struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let i = (yy * self.width + xx) * 3;
                self.pixels[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize) {
        for (n, c) in text.chars().enumerate() {
            let Some(glyph) = font8x8::legacy::BASIC_LEGACY.get(c as usize) else {
                continue;
            };
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(
                            x + (n * 8 + col) * scale,
                            y + row * scale,
                            scale,
                            scale,
                            [30, 30, 30],
                        );
                    }
                }
            }
        }
    }
}

/// Two bar panels per scenario: throughput (with its share of the ceiling)
/// and p99 latency.
pub fn chart(rows: &[Row], title: &str, path: &Path) -> std::io::Result<()> {
    let (label_w, bar_w, gap, row_h) = (200, 330, 40, 44);
    let width = label_w + 2 * bar_w + 2 * gap + 20;
    let height = 90 + rows.len() * row_h + 20;
    let mut canvas = Canvas::new(width, height);
    canvas.text(10, 10, title, 2);
    canvas.text(label_w, 50, "throughput per second", 1);
    canvas.text(label_w + bar_w + gap, 50, "p99 latency (ms)", 1);
    let max_rate = rows.iter().map(|r| r.per_second).fold(1.0, f64::max);
    let max_p99 = rows.iter().map(|r| r.p99_ms).fold(0.001, f64::max);
    for (i, r) in rows.iter().enumerate() {
        let y = 70 + i * row_h;
        canvas.text(10, y + 10, &r.name, 2);
        let w = ((r.per_second / max_rate) * bar_w as f64) as usize;
        canvas.rect(label_w, y + 4, w.max(1), 18, [70, 130, 180]);
        canvas.text(
            label_w,
            y + 26,
            &format!(
                "{:.0}/s  {:.0}% of ceiling",
                r.per_second,
                r.ratio_to_ceiling * 100.0
            ),
            1,
        );
        let w = ((r.p99_ms / max_p99) * bar_w as f64) as usize;
        canvas.rect(label_w + bar_w + gap, y + 4, w.max(1), 18, [205, 92, 92]);
        canvas.text(
            label_w + bar_w + gap,
            y + 26,
            &format!("{:.2} ms", r.p99_ms),
            1,
        );
    }
    let file = std::fs::File::create(path)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&canvas.pixels)
        .map_err(std::io::Error::other)?;
    Ok(())
}
