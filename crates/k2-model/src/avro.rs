//! Avro binary encoding of K2 records, straight from and into the Rust structs, and the
//! Confluent wire format around it: magic byte 0, a 4-byte big-endian schema id, the datum.
//!
//! The codec writes exactly what the `.avsc` files in `schemas/avro/` describe; tests check
//! it byte for byte against the reference implementation (apache-avro). Going through a
//! generic `Value` tree would cost 5–20× more per record.

use crate::decimal::Decimal8;
use crate::enums::{AssetClass, DataType, TradeSide};
use crate::error::ModelError;
use crate::ids::MessageId;
use crate::record::{MarketRecord, Quote, ReferenceData, Text, Trade, VendorData};

/// Schema text of each record type, as registered with the schema registry.
pub const TRADE_SCHEMA: &str = include_str!("../../../schemas/avro/trade.avsc");
pub const QUOTE_SCHEMA: &str = include_str!("../../../schemas/avro/quote.avsc");
pub const REFERENCE_DATA_SCHEMA: &str = include_str!("../../../schemas/avro/reference_data.avsc");

/// The schema a data type is written with.
pub fn schema_for(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Trades => TRADE_SCHEMA,
        DataType::Quotes => QUOTE_SCHEMA,
        DataType::ReferenceData => REFERENCE_DATA_SCHEMA,
    }
}

const MAGIC: u8 = 0;
/// Bytes before the datum: magic + schema id.
pub const HEADER_LEN: usize = 5;

/// Writes `record` in the Confluent wire format under `schema_id`.
pub fn encode(record: &MarketRecord, schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    let mut w = Writer(out);
    match record {
        MarketRecord::Trade(t) => w.trade(t),
        MarketRecord::Quote(q) => w.quote(q),
        MarketRecord::Reference(r) => w.reference(r),
    }
}

/// Reads the schema id of a wire-format payload.
pub fn schema_id(payload: &[u8]) -> Result<u32, ModelError> {
    match payload {
        [MAGIC, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [m, ..] if *m != MAGIC => Err(ModelError::Framing(format!("magic byte is {m}, not 0"))),
        _ => Err(ModelError::Framing(format!(
            "{} bytes is shorter than the 5-byte header",
            payload.len()
        ))),
    }
}

/// Decodes a wire-format payload; `resolve` maps the schema id to the record type.
pub fn decode(
    payload: &[u8],
    resolve: impl FnOnce(u32) -> Option<DataType>,
) -> Result<MarketRecord, ModelError> {
    let id = schema_id(payload)?;
    let data_type = resolve(id).ok_or(ModelError::UnknownSchema(id))?;
    decode_datum(data_type, &payload[HEADER_LEN..])
}

/// Decodes a bare datum of a known record type; trailing bytes are an error.
pub fn decode_datum(data_type: DataType, datum: &[u8]) -> Result<MarketRecord, ModelError> {
    let (record, read) = decode_datum_prefix(data_type, datum)?;
    if read != datum.len() {
        return Err(ModelError::Decode(format!(
            "{} trailing bytes after the record",
            datum.len() - read
        )));
    }
    Ok(record)
}

/// Decodes a record of a known type from the start of `datum` (a newer schema version may
/// append fields after K2's); returns it and the bytes it took.
pub fn decode_datum_prefix(
    data_type: DataType,
    datum: &[u8],
) -> Result<(MarketRecord, usize), ModelError> {
    let mut r = Reader { buf: datum, pos: 0 };
    let record = match data_type {
        DataType::Trades => MarketRecord::Trade(r.trade()?),
        DataType::Quotes => MarketRecord::Quote(r.quote()?),
        DataType::ReferenceData => MarketRecord::Reference(r.reference()?),
    };
    Ok((record, r.pos))
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.long(b.len() as i64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn message_id(&mut self, id: MessageId) {
        self.bytes(&id.uuid_text());
    }

    fn decimal(&mut self, d: Decimal8) {
        let (buf, start) = d.to_be_bytes_min();
        self.bytes(&buf[start..]);
    }

    fn opt_long(&mut self, v: Option<i64>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.long(v);
            }
        }
    }

    fn opt_string(&mut self, v: Option<&str>) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                self.string(v);
            }
        }
    }

    fn vendor(&mut self, v: Option<&VendorData>) {
        match v {
            None => self.long(0),
            Some(map) => {
                self.long(1);
                if !map.is_empty() {
                    self.long(map.len() as i64);
                    for (k, v) in map {
                        self.string(k);
                        self.string(v);
                    }
                }
                self.long(0);
            }
        }
    }

    fn trade(&mut self, t: &Trade) {
        self.message_id(t.message_id);
        self.string(&t.trade_id);
        self.string(&t.symbol);
        self.string(&t.exchange);
        self.long(t.asset_class.index() as i64);
        self.long(t.timestamp_us);
        self.long(t.receive_timestamp_us);
        self.decimal(t.price);
        self.decimal(t.quantity);
        self.string(&t.currency);
        self.long(t.side.index() as i64);
        if !t.trade_conditions.is_empty() {
            self.long(t.trade_conditions.len() as i64);
            for c in &t.trade_conditions {
                self.string(c);
            }
        }
        self.long(0);
        self.opt_long(t.source_sequence);
        self.long(t.ingestion_timestamp_us);
        self.opt_long(t.platform_sequence);
        self.vendor(t.vendor_data.as_ref());
    }

    fn quote(&mut self, q: &Quote) {
        self.message_id(q.message_id);
        self.string(&q.quote_id);
        self.string(&q.symbol);
        self.string(&q.exchange);
        self.long(q.asset_class.index() as i64);
        self.long(q.timestamp_us);
        self.long(q.receive_timestamp_us);
        self.decimal(q.bid_price);
        self.decimal(q.bid_quantity);
        self.decimal(q.ask_price);
        self.decimal(q.ask_quantity);
        self.string(&q.currency);
        self.opt_long(q.source_sequence);
        self.long(q.ingestion_timestamp_us);
        self.opt_long(q.platform_sequence);
        self.vendor(q.vendor_data.as_ref());
    }

    fn reference(&mut self, r: &ReferenceData) {
        self.message_id(r.message_id);
        self.string(&r.company_id);
        self.string(&r.symbol);
        self.string(&r.exchange);
        self.long(r.asset_class.index() as i64);
        self.string(&r.company_name);
        self.opt_string(r.isin.as_deref());
        self.opt_string(r.currency.as_deref());
        self.opt_long(r.listing_date_us);
        self.opt_long(r.delisting_date_us);
        self.0.push(u8::from(r.is_active));
        self.long(r.receive_timestamp_us);
        self.long(r.ingestion_timestamp_us);
        self.vendor(r.vendor_data.as_ref());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> ModelError {
        ModelError::Decode(format!("{what} at byte {}", self.pos))
    }

    fn long(&mut self) -> Result<i64, ModelError> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint longer than 64 bits"));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err("varint longer than 64 bits"));
            }
        }
    }

    fn len(&mut self) -> Result<usize, ModelError> {
        let n = self.long()?;
        if n < 0 || n as usize > self.buf.len() - self.pos {
            return Err(self.err(&format!("length {n} runs past the end")));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ModelError> {
        let n = self.len()?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn string(&mut self) -> Result<Text, ModelError> {
        let start = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(Text::new)
            .map_err(|_| ModelError::Decode(format!("string at byte {start} is not UTF-8")))
    }

    /// A message id, in the UUID text form the schema's `uuid` string carries.
    fn message_id(&mut self) -> Result<MessageId, ModelError> {
        let start = self.pos;
        let b = self.bytes()?;
        MessageId::parse(b).ok_or_else(|| {
            ModelError::Decode(format!(
                "message_id at byte {start} is not a UUID: '{}'",
                String::from_utf8_lossy(b)
            ))
        })
    }

    fn decimal(&mut self) -> Result<Decimal8, ModelError> {
        Decimal8::from_be_bytes(self.bytes()?)
    }

    fn boolean(&mut self) -> Result<bool, ModelError> {
        match self.buf.get(self.pos) {
            Some(0) => {
                self.pos += 1;
                Ok(false)
            }
            Some(1) => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) => Err(self.err(&format!("boolean byte {b}"))),
            None => Err(self.err("truncated boolean")),
        }
    }

    fn union_branch(&mut self) -> Result<bool, ModelError> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(self.err(&format!("union branch {i}"))),
        }
    }

    fn opt_long(&mut self) -> Result<Option<i64>, ModelError> {
        Ok(if self.union_branch()? {
            Some(self.long()?)
        } else {
            None
        })
    }

    fn opt_string(&mut self) -> Result<Option<Text>, ModelError> {
        Ok(if self.union_branch()? {
            Some(self.string()?)
        } else {
            None
        })
    }

    /// Reads the blocks of an array or map; a negative count is followed by a byte size.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or_else(|| self.err("block count"))?;
                self.long()?;
            }
            if count as usize > self.buf.len() - self.pos {
                return Err(self.err(&format!("block of {count} items runs past the end")));
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }

    fn vendor(&mut self) -> Result<Option<VendorData>, ModelError> {
        if !self.union_branch()? {
            return Ok(None);
        }
        let mut map = VendorData::new();
        self.blocks(|r| {
            let k = r.string()?;
            let v = r.string()?;
            map.push(k, v);
            Ok(())
        })?;
        Ok(Some(map))
    }

    fn asset_class(&mut self) -> Result<AssetClass, ModelError> {
        AssetClass::from_index(self.long()? as usize)
    }

    fn trade(&mut self) -> Result<Trade, ModelError> {
        Ok(Trade {
            message_id: self.message_id()?,
            trade_id: self.string()?,
            symbol: self.string()?,
            exchange: self.string()?,
            asset_class: self.asset_class()?,
            timestamp_us: self.long()?,
            receive_timestamp_us: self.long()?,
            price: self.decimal()?,
            quantity: self.decimal()?,
            currency: self.string()?,
            side: TradeSide::from_index(self.long()? as usize)?,
            trade_conditions: {
                let mut v = Vec::new();
                self.blocks(|r| {
                    v.push(r.string()?);
                    Ok(())
                })?;
                v
            },
            source_sequence: self.opt_long()?,
            ingestion_timestamp_us: self.long()?,
            platform_sequence: self.opt_long()?,
            vendor_data: self.vendor()?,
        })
    }

    fn quote(&mut self) -> Result<Quote, ModelError> {
        Ok(Quote {
            message_id: self.message_id()?,
            quote_id: self.string()?,
            symbol: self.string()?,
            exchange: self.string()?,
            asset_class: self.asset_class()?,
            timestamp_us: self.long()?,
            receive_timestamp_us: self.long()?,
            bid_price: self.decimal()?,
            bid_quantity: self.decimal()?,
            ask_price: self.decimal()?,
            ask_quantity: self.decimal()?,
            currency: self.string()?,
            source_sequence: self.opt_long()?,
            ingestion_timestamp_us: self.long()?,
            platform_sequence: self.opt_long()?,
            vendor_data: self.vendor()?,
        })
    }

    fn reference(&mut self) -> Result<ReferenceData, ModelError> {
        Ok(ReferenceData {
            message_id: self.message_id()?,
            company_id: self.string()?,
            symbol: self.string()?,
            exchange: self.string()?,
            asset_class: self.asset_class()?,
            company_name: self.string()?,
            isin: self.opt_string()?,
            currency: self.opt_string()?,
            listing_date_us: self.opt_long()?,
            delisting_date_us: self.opt_long()?,
            is_active: self.boolean()?,
            receive_timestamp_us: self.long()?,
            ingestion_timestamp_us: self.long()?,
            vendor_data: self.vendor()?,
        })
    }
}
