//! Profile generic (class 7, Blue Book 4.3.6): a buffer of captured rows with selective access by
//! range (selector 1) and by entry (selector 2), and the client-side decoding of a buffer, which
//! needs the capture objects to know what each column is.

use alloc::vec;
use alloc::vec::Vec;

use super::classes::{ClockAttributes, logical_name};
use crate::Obis;
use crate::apdu::{DataAccessResult, SelectiveAccess};
use crate::axdr::{Data, DateTime, DeviationConvention};
use crate::error::{Error, ErrorKind, Result};

/// One column of a profile: which attribute of which object is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureObject {
    pub class_id: u16,
    pub logical_name: Obis,
    pub attribute_id: i8,
    /// 0 = the whole attribute.
    pub data_index: u16,
}

impl CaptureObject {
    pub fn to_data(&self) -> Data {
        Data::Structure(vec![
            Data::LongUnsigned(self.class_id),
            logical_name(self.logical_name),
            Data::Integer(self.attribute_id),
            Data::LongUnsigned(self.data_index),
        ])
    }

    pub fn from_data(d: &Data) -> Option<CaptureObject> {
        match d.as_list()? {
            [
                Data::LongUnsigned(c),
                Data::OctetString(ln),
                Data::Integer(a),
                Data::LongUnsigned(i),
            ] if ln.len() == 6 => {
                let mut o = [0u8; 6];
                o.copy_from_slice(ln);
                Some(CaptureObject {
                    class_id: *c,
                    logical_name: Obis(o),
                    attribute_id: *a,
                    data_index: *i,
                })
            }
            _ => None,
        }
    }

    /// Decodes attribute 3 (capture_objects).
    pub fn list_from_data(d: &Data) -> Result<Vec<CaptureObject>> {
        let items = d.as_list().ok_or(Error::malformed(
            "capture_objects is not an array",
            "profile generic",
        ))?;
        items
            .iter()
            .map(|i| {
                CaptureObject::from_data(i).ok_or(Error::malformed(
                    "bad capture object definition",
                    "profile generic",
                ))
            })
            .collect()
    }
}

/// Rows picked by selective access and the column range `[from, to)` to return.
type Selection<'a> = (Vec<&'a Vec<Data>>, (usize, usize));

/// A profile generic object held in memory (first in, first out, sorted by capture time).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileGeneric {
    pub logical_name: Obis,
    pub capture_objects: Vec<CaptureObject>,
    pub capture_period_s: u32,
    /// Rows, oldest first; column 0 is the clock when the profile is time-based.
    pub rows: Vec<Vec<Data>>,
    pub max_entries: u32,
}

impl ProfileGeneric {
    /// Appends a row, dropping the oldest when full.
    pub fn capture(&mut self, row: Vec<Data>) {
        if self.max_entries > 0 && self.rows.len() as u32 >= self.max_entries {
            self.rows.remove(0);
        }
        self.rows.push(row);
    }

    /// Attributes 1..=8; attribute 2 honours selective access.
    pub fn get(
        &self,
        attribute_id: i8,
        access: Option<&SelectiveAccess>,
    ) -> core::result::Result<Data, DataAccessResult> {
        Ok(match attribute_id {
            1 => logical_name(self.logical_name),
            2 => self.buffer(access)?,
            3 => Data::Array(
                self.capture_objects
                    .iter()
                    .map(CaptureObject::to_data)
                    .collect(),
            ),
            4 => Data::DoubleLongUnsigned(self.capture_period_s),
            5 => Data::Enum(1), // sort_method: fifo
            6 => CaptureObject {
                class_id: 0,
                logical_name: Obis([0; 6]),
                attribute_id: 0,
                data_index: 0,
            }
            .to_data(),
            7 => Data::DoubleLongUnsigned(self.rows.len() as u32),
            8 => Data::DoubleLongUnsigned(self.max_entries),
            _ => return Err(DataAccessResult::ObjectUndefined),
        })
    }

    fn buffer(
        &self,
        access: Option<&SelectiveAccess>,
    ) -> core::result::Result<Data, DataAccessResult> {
        let all_columns = (0, self.capture_objects.len());
        let (rows, (c0, c1)): (Vec<&Vec<Data>>, (usize, usize)) = match access {
            None => (self.rows.iter().collect(), all_columns),
            Some(sa) if sa.selector == 1 => self.by_range(&sa.parameters)?,
            Some(sa) if sa.selector == 2 => self.by_entry(&sa.parameters)?,
            Some(_) => return Err(DataAccessResult::ScopeOfAccessViolated),
        };
        Ok(Data::Array(
            rows.into_iter()
                .map(|r| Data::Structure(r[c0..c1].to_vec()))
                .collect(),
        ))
    }

    /// Selector 2, entry_descriptor: {from_entry, to_entry (0 = last), from_selected_value,
    /// to_selected_value (0 = last)}, all 1-based (Blue Book 4.3.6).
    fn by_entry(&self, p: &Data) -> core::result::Result<Selection<'_>, DataAccessResult> {
        let [from, to, c_from, c_to] = p.as_list().ok_or(DataAccessResult::TypeUnmatched)? else {
            return Err(DataAccessResult::TypeUnmatched);
        };
        let n = self.rows.len() as i128;
        let cols = self.capture_objects.len() as i128;
        let get = |d: &Data| d.as_i128().ok_or(DataAccessResult::TypeUnmatched);
        let (from, to, c_from, c_to) = (get(from)?, get(to)?, get(c_from)?, get(c_to)?);
        let to = if to == 0 { n } else { to.min(n) };
        let c_to = if c_to == 0 { cols } else { c_to.min(cols) };
        let from = from.max(1);
        let c_from = c_from.max(1);
        if c_from > c_to {
            return Err(DataAccessResult::ScopeOfAccessViolated);
        }
        let rows = if from > to {
            Vec::new()
        } else {
            self.rows[(from - 1) as usize..to as usize].iter().collect()
        };
        Ok((rows, ((c_from - 1) as usize, c_to as usize)))
    }

    /// Selector 1, range_descriptor: {restricting_object, from_value, to_value, selected_values}.
    /// Only restriction on the first column (the capture time) is supported, as meters do.
    fn by_range(&self, p: &Data) -> core::result::Result<Selection<'_>, DataAccessResult> {
        let [restricting, from, to, selected] =
            p.as_list().ok_or(DataAccessResult::TypeUnmatched)?
        else {
            return Err(DataAccessResult::TypeUnmatched);
        };
        let restricting =
            CaptureObject::from_data(restricting).ok_or(DataAccessResult::TypeUnmatched)?;
        let column = self
            .capture_objects
            .iter()
            .position(|c| {
                c.logical_name == restricting.logical_name
                    && c.attribute_id == restricting.attribute_id
            })
            .ok_or(DataAccessResult::ScopeOfAccessViolated)?;
        let key = |d: &Data| -> Option<i64> {
            match ClockAttributes::time_from_data(d) {
                // The deviation sign cancels out when both sides use the same convention.
                Some(dt) => dt.to_unix(DeviationConvention::UtcMinusLocal),
                None => d.as_i128().map(|v| v as i64),
            }
        };
        let (from, to) = (
            key(from).ok_or(DataAccessResult::TypeUnmatched)?,
            key(to).ok_or(DataAccessResult::TypeUnmatched)?,
        );
        let rows = self
            .rows
            .iter()
            .filter(|r| {
                r.get(column)
                    .and_then(key)
                    .is_some_and(|k| k >= from && k <= to)
            })
            .collect();
        // selected_values: an empty array means all columns; we only support that or a prefix.
        let cols = match selected.as_list() {
            Some([]) | None => self.capture_objects.len(),
            Some(list) => list.len().min(self.capture_objects.len()),
        };
        Ok((rows, (0, cols)))
    }
}

/// A decoded buffer row: one value per capture object, with compressed (null) clock columns
/// filled in from the previous row plus the capture period.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub values: Vec<Data>,
}

/// Decodes a profile buffer read from a server. The capture objects (attribute 3) must be read
/// first: without them the columns cannot be interpreted, and a row whose width differs from
/// them is an error instead of being silently misread.
pub fn decode_buffer(
    buffer: &Data,
    capture_objects: &[CaptureObject],
    capture_period_s: u32,
) -> Result<Vec<Row>> {
    const CTX: &str = "profile buffer";
    if capture_objects.is_empty() {
        return Err(Error::new(
            ErrorKind::State("capture objects must be read before the buffer"),
            CTX,
        ));
    }
    let rows = buffer
        .as_list()
        .ok_or(Error::malformed("buffer is not an array", CTX))?;
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for row in rows {
        let values = row
            .as_list()
            .ok_or(Error::malformed("row is not a structure", CTX))?;
        if values.len() != capture_objects.len() {
            return Err(Error::new(
                ErrorKind::LengthOutOfRange {
                    length: values.len(),
                    max: capture_objects.len(),
                },
                "profile buffer row width",
            ));
        }
        let mut values = values.to_vec();
        for (i, c) in capture_objects.iter().enumerate() {
            // Blue Book 4.3.6: a clock column may be null-data when it follows from the
            // previous entry and the capture period.
            if c.class_id == super::class_id::CLOCK && values[i] == Data::Null {
                let prev = out
                    .last()
                    .and_then(|r| ClockAttributes::time_from_data(&r.values[i]));
                let Some(prev) = prev else {
                    return Err(Error::malformed("null time in the first row", CTX));
                };
                let conv = DeviationConvention::UtcMinusLocal;
                let unix = prev
                    .to_unix(conv)
                    .ok_or(Error::malformed("previous time not specified", CTX))?;
                let offset = if prev.deviation_min == DateTime::DEVIATION_UNSPECIFIED {
                    0
                } else {
                    conv.offset_min(prev.deviation_min)
                };
                let next = DateTime::from_unix(unix + capture_period_s as i64, offset, conv);
                values[i] = Data::OctetString(next.to_bytes().to_vec());
            }
        }
        out.push(Row { values });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosem::class_id;

    fn profile() -> ProfileGeneric {
        let mut p = ProfileGeneric {
            logical_name: Obis::new(1, 0, 99, 1, 0, 255),
            capture_objects: vec![
                CaptureObject {
                    class_id: class_id::CLOCK,
                    logical_name: Obis::CLOCK,
                    attribute_id: 2,
                    data_index: 0,
                },
                CaptureObject {
                    class_id: 3,
                    logical_name: Obis::new(1, 0, 1, 8, 0, 255),
                    attribute_id: 2,
                    data_index: 0,
                },
            ],
            capture_period_s: 900,
            rows: Vec::new(),
            max_entries: 4,
        };
        for i in 0..6 {
            let t = DateTime::from_unix(
                1_700_000_000 + i * 900,
                0,
                DeviationConvention::UtcMinusLocal,
            );
            p.capture(vec![
                Data::OctetString(t.to_bytes().to_vec()),
                Data::DoubleLongUnsigned(i as u32 * 10),
            ]);
        }
        p
    }

    fn time(i: i64) -> Data {
        Data::OctetString(
            DateTime::from_unix(
                1_700_000_000 + i * 900,
                0,
                DeviationConvention::UtcMinusLocal,
            )
            .to_bytes()
            .to_vec(),
        )
    }

    #[test]
    fn ring_buffer_keeps_the_newest_entries() {
        let p = profile();
        assert_eq!(p.rows.len(), 4);
        assert_eq!(p.rows[0][1], Data::DoubleLongUnsigned(20));
        assert_eq!(p.get(7, None), Ok(Data::DoubleLongUnsigned(4)));
    }

    #[test]
    fn selective_access_by_entry() {
        let p = profile();
        let sa = SelectiveAccess {
            selector: 2,
            parameters: Data::Structure(vec![
                Data::DoubleLongUnsigned(2),
                Data::DoubleLongUnsigned(3),
                Data::LongUnsigned(2),
                Data::LongUnsigned(0),
            ]),
        };
        let b = p.get(2, Some(&sa)).unwrap();
        assert_eq!(
            b,
            Data::Array(vec![
                Data::Structure(vec![Data::DoubleLongUnsigned(30)]),
                Data::Structure(vec![Data::DoubleLongUnsigned(40)])
            ])
        );
    }

    #[test]
    fn selective_access_by_range_of_capture_time() {
        let p = profile();
        let sa = SelectiveAccess {
            selector: 1,
            parameters: Data::Structure(vec![
                p.capture_objects[0].to_data(),
                time(3),
                time(4),
                Data::Array(vec![]),
            ]),
        };
        let Data::Array(rows) = p.get(2, Some(&sa)).unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_list().unwrap()[1], Data::DoubleLongUnsigned(30));
        let bad = SelectiveAccess {
            selector: 1,
            parameters: Data::Null,
        };
        assert_eq!(p.get(2, Some(&bad)), Err(DataAccessResult::TypeUnmatched));
        let unknown = SelectiveAccess {
            selector: 9,
            parameters: Data::Null,
        };
        assert_eq!(
            p.get(2, Some(&unknown)),
            Err(DataAccessResult::ScopeOfAccessViolated)
        );
    }

    #[test]
    fn buffer_decoding_needs_capture_objects_and_fills_null_times() {
        let p = profile();
        let buffer = Data::Array(vec![
            Data::Structure(vec![time(0), Data::DoubleLongUnsigned(1)]),
            Data::Structure(vec![Data::Null, Data::DoubleLongUnsigned(2)]),
        ]);
        assert_eq!(
            decode_buffer(&buffer, &[], 900).unwrap_err().kind(),
            &ErrorKind::State("capture objects must be read before the buffer")
        );
        let rows = decode_buffer(&buffer, &p.capture_objects, 900).unwrap();
        assert_eq!(rows[1].values[0], time(1));
        let narrow = Data::Array(vec![Data::Structure(vec![time(0)])]);
        assert!(decode_buffer(&narrow, &p.capture_objects, 900).is_err());
        let first_null = Data::Array(vec![Data::Structure(vec![
            Data::Null,
            Data::DoubleLongUnsigned(1),
        ])]);
        assert!(decode_buffer(&first_null, &p.capture_objects, 900).is_err());
        let co = CaptureObject::list_from_data(&p.get(3, None).unwrap()).unwrap();
        assert_eq!(co, p.capture_objects);
    }
}
