//! A small PDF page writer on `pdf-writer`: text in the standard Helvetica fonts (WinAnsi
//! encoding, no embedded font files) and bar charts drawn as vector paths in a Form XObject.
//!
//! Why not typst (DESIGN §7): statements need a table of lines and one chart, not typesetting;
//! `pdf-writer` (the PDF layer typst itself uses) adds one small crate and no fonts, where typst
//! as a library brings a compiler, font stack and hundreds of crates.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// A4 portrait, points.
const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 50.0;
const FONT: Name<'static> = Name(b"F1");
const FONT_BOLD: Name<'static> = Name(b"F2");
const ROW_SIZE: f32 = 9.5;

/// One bar of a chart: a label under it and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Printed under the bar (every few bars when there are many).
    pub label: String,
    /// Height in the chart's unit (negative values are drawn as zero).
    pub value: f64,
}

/// A bar chart placed on a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title above the chart.
    pub title: String,
    /// Unit of the values, printed with the maximum.
    pub unit: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
}

enum Item {
    Text {
        bold: bool,
        size: f32,
        text: String,
    },
    Row {
        bold: bool,
        cells: Vec<(f32, String)>,
    },
    Gap(f32),
    Chart(Chart),
}

/// A document of one or more pages built line by line; long content flows onto new pages.
pub struct Document {
    title: String,
    items: Vec<Item>,
}

impl Document {
    /// An empty document with a title (document info and the first heading).
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            items: Vec::new(),
        }
    }

    /// A heading line.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.items.push(Item::Text {
            bold: true,
            size: 13.0,
            text: text.into(),
        });
        self
    }

    /// A normal text line.
    pub fn line(&mut self, text: impl Into<String>) -> &mut Self {
        self.items.push(Item::Text {
            bold: false,
            size: 10.0,
            text: text.into(),
        });
        self
    }

    /// A table row: cells at the given x offsets from the left margin (points).
    pub fn row(&mut self, cells: &[(f32, &str)], bold: bool) -> &mut Self {
        self.items.push(Item::Row {
            bold,
            cells: cells.iter().map(|(x, t)| (*x, (*t).to_owned())).collect(),
        });
        self
    }

    /// Vertical space, points.
    pub fn gap(&mut self, points: f32) -> &mut Self {
        self.items.push(Item::Gap(points));
        self
    }

    /// A bar chart, 180 points high.
    pub fn chart(&mut self, chart: Chart) -> &mut Self {
        self.items.push(Item::Chart(chart));
        self
    }

    /// Renders the PDF bytes.
    pub fn render(&self) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let mut next = 1;
        let mut alloc = || {
            let r = Ref::new(next);
            next += 1;
            r
        };
        let catalog = alloc();
        let tree = alloc();
        let font = alloc();
        let font_bold = alloc();
        let info = alloc();
        // Lay out pages first: each is a content stream plus the charts it places.
        type PlacedChart = (Name<'static>, Vec<u8>, Rect);
        let mut pages: Vec<(Content, Vec<PlacedChart>)> = Vec::new();
        let mut content = Content::new();
        let mut charts = Vec::new();
        let mut y = PAGE_H - MARGIN;
        const CHART_NAMES: [&[u8]; 8] = [b"C0", b"C1", b"C2", b"C3", b"C4", b"C5", b"C6", b"C7"];
        for item in &self.items {
            let need = match item {
                Item::Text { size, .. } => size * 1.45,
                Item::Row { .. } => ROW_SIZE * 1.45,
                Item::Gap(g) => *g,
                Item::Chart(_) => 215.0,
            };
            let chart_slots_full =
                matches!(item, Item::Chart(_)) && charts.len() == CHART_NAMES.len();
            if y - need < MARGIN || chart_slots_full {
                pages.push((
                    std::mem::replace(&mut content, Content::new()),
                    std::mem::take(&mut charts),
                ));
                y = PAGE_H - MARGIN;
            }
            match item {
                Item::Text { bold, size, text } => {
                    content
                        .begin_text()
                        .set_font(if *bold { FONT_BOLD } else { FONT }, *size)
                        .next_line(MARGIN, y - size)
                        .show(Str(&win_ansi(text)))
                        .end_text();
                    y -= size * 1.45;
                }
                Item::Row { bold, cells } => {
                    for (x, text) in cells {
                        content
                            .begin_text()
                            .set_font(if *bold { FONT_BOLD } else { FONT }, ROW_SIZE)
                            .next_line(MARGIN + x, y - ROW_SIZE)
                            .show(Str(&win_ansi(text)))
                            .end_text();
                    }
                    y -= ROW_SIZE * 1.45;
                }
                Item::Gap(g) => y -= g,
                Item::Chart(chart) => {
                    let name = Name(CHART_NAMES[charts.len()]);
                    let (w, h) = (PAGE_W - 2.0 * MARGIN, 180.0);
                    let bottom = y - 200.0;
                    content
                        .begin_text()
                        .set_font(FONT_BOLD, 10.0)
                        .next_line(MARGIN, y - 10.0)
                        .show(Str(&win_ansi(&chart.title)))
                        .end_text();
                    content
                        .save_state()
                        .transform([1.0, 0.0, 0.0, 1.0, MARGIN, bottom])
                        .x_object(name)
                        .restore_state();
                    charts.push((name, chart_stream(chart, w, h), Rect::new(0.0, -15.0, w, h)));
                    y -= 215.0;
                }
            }
        }
        pages.push((content, charts));

        let page_ids: Vec<Ref> = pages.iter().map(|_| alloc()).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(page_ids.iter().copied())
            .count(page_ids.len() as i32);
        pdf.document_info(info)
            .title(TextStr(&self.title))
            .producer(TextStr("wattline"));
        let n_pages = pages.len();
        for (i, ((content, charts), page_id)) in pages.into_iter().zip(&page_ids).enumerate() {
            let content_id = alloc();
            let chart_ids: Vec<Ref> = charts.iter().map(|_| alloc()).collect();
            let mut content = content;
            content
                .begin_text()
                .set_font(FONT, 8.0)
                .next_line(PAGE_W - MARGIN - 60.0, MARGIN / 2.0)
                .show(Str(format!("page {} of {n_pages}", i + 1).as_bytes()))
                .end_text();
            let mut page = pdf.page(*page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
                .parent(tree)
                .contents(content_id);
            let mut resources = page.resources();
            resources
                .fonts()
                .pair(FONT, font)
                .pair(FONT_BOLD, font_bold);
            {
                let mut xo = resources.x_objects();
                for ((name, _, _), id) in charts.iter().zip(&chart_ids) {
                    xo.pair(*name, *id);
                }
            }
            resources.finish();
            page.finish();
            pdf.stream(content_id, &content.finish());
            for ((_, stream, bbox), id) in charts.iter().zip(&chart_ids) {
                let mut form = pdf.form_xobject(*id, stream);
                form.bbox(*bbox);
                form.resources().fonts().pair(FONT, font);
                form.finish();
            }
        }
        for (id, base) in [
            (font, Name(b"Helvetica")),
            (font_bold, Name(b"Helvetica-Bold")),
        ] {
            pdf.type1_font(id)
                .base_font(base)
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        pdf.finish()
    }
}

/// The chart's drawing: axis lines, one filled rectangle path per bar, the maximum and labels.
fn chart_stream(chart: &Chart, w: f32, h: f32) -> Vec<u8> {
    let mut c = Content::new();
    let max = chart.bars.iter().map(|b| b.value).fold(0.0f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let (left, plot_w, plot_h) = (40.0f32, w - 40.0, h - 10.0);
    c.set_stroke_rgb(0.3, 0.3, 0.3).set_line_width(0.6);
    c.move_to(left, 0.0).line_to(left + plot_w, 0.0).stroke();
    c.move_to(left, 0.0).line_to(left, plot_h).stroke();
    c.begin_text()
        .set_font(FONT, 7.0)
        .next_line(0.0, plot_h - 7.0)
        .show(Str(&win_ansi(&format!("{max:.1} {}", chart.unit))))
        .end_text();
    let n = chart.bars.len().max(1) as f32;
    let slot = plot_w / n;
    let label_every = (chart.bars.len() / 12).max(1);
    c.set_fill_rgb(0.16, 0.44, 0.70);
    for (i, bar) in chart.bars.iter().enumerate() {
        let bh = (bar.value.max(0.0) / top) as f32 * plot_h;
        let x = left + i as f32 * slot + slot * 0.15;
        c.rect(x, 0.0, slot * 0.7, bh).fill_nonzero();
    }
    c.set_fill_rgb(0.0, 0.0, 0.0);
    for (i, bar) in chart.bars.iter().enumerate().step_by(label_every) {
        c.begin_text()
            .set_font(FONT, 6.0)
            .next_line(left + i as f32 * slot, -9.0)
            .show(Str(&win_ansi(&bar.label)))
            .end_text();
    }
    c.finish().into_vec()
}

/// Text in the WinAnsi encoding of the standard fonts: ASCII and Latin-1 as they are, the euro
/// sign at 0x80, anything else as `?` (the CSV carries the exact text).
pub(crate) fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|ch| match ch {
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{ff}' => ch as u32 as u8,
            '€' => 0x80,
            '–' => 0x96,
            '—' => 0x97,
            _ => b'?',
        })
        .collect()
}
