//! Deterministic synthetic market data in the ASX sample layout, for benchmarks: a
//! `reference-data/company_info.csv` and one trades file per company, with a random walk
//! of prices over trading hours. The same seed gives the same bytes.

use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `trades` trade rows spread over `companies` companies and 5 trading days into
/// `dir`. Company ids start at 90001 and symbols are `SYN00`, `SYN01`, ….
pub fn write_asx_trades(dir: &Path, companies: u32, trades: u64, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("reference-data"))?;
    std::fs::create_dir_all(dir.join("trades"))?;
    let mut info = String::from("company_id,symbol,company_name,ISIN,start_date,end_date\r\n");
    for c in 0..companies {
        info.push_str(&format!(
            "{id},SYN{c:02},SYNTHETIC {c} LTD,AU0000SYN{c:03},01/02/2014,12/31/2014\r\n",
            id = 90001 + c
        ));
    }
    std::fs::write(dir.join("reference-data").join("company_info.csv"), info)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let per_company = trades / u64::from(companies.max(1));
    for c in 0..companies {
        let rows = if c + 1 == companies {
            trades - per_company * u64::from(companies - 1)
        } else {
            per_company
        };
        let mut out = BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join("trades").join(format!("{}.csv", 90001 + c)))?,
        );
        let mut price_milli: i64 = 10_000 + rng.i64(0..50_000);
        let per_day = rows.div_ceil(5).max(1);
        // Trading hours 10:00–16:00 local, spread evenly over the day's rows.
        let day_ms: u64 = 6 * 3_600_000;
        for i in 0..rows {
            let day = 10 + (i / per_day) as u32;
            let ms = 10 * 3_600_000 + (i % per_day) * day_ms / per_day;
            let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
            price_milli = (price_milli + rng.i64(-10..=10)).max(1);
            let volume = rng.u64(1..=5000);
            let qualifier = [0, 0, 0, 0, 2, 3, 25][rng.usize(0..7)];
            writeln!(
                out,
                "03/{day:02}/2014,{h:02}:{m:02}:{s:02}.{milli:03},{}.{:03},{volume},{qualifier},,\r",
                price_milli / 1000,
                price_milli % 1000
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
