//! The duration of an MP4 or QuickTime (MOV) file, read from its movie header: the `mvhd` box
//! inside the top-level `moov` box, wherever `moov` is (before the media data, or after it as
//! most cameras write it). Only box headers are read, in place: no allocation, no copy, and every
//! size is checked against the bytes present, so any input is safe to hand in.
//!
//! A hand-written reader rather than the `mp4` or `mp4parse` crates: those parse every track
//! (allocating for each) to answer what sixteen bytes of `mvhd` say.

use std::time::Duration;

/// Why no duration could be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mp4Error {
    /// The bytes end inside a box, before the movie header was read.
    #[error("the file ends inside a box: it is truncated")]
    Truncated,
    /// A box header is not one: its size is smaller than the header itself.
    #[error("a box header is malformed")]
    Malformed,
    /// There is no top-level `moov` box, or no `mvhd` in it: not an MP4 or MOV file.
    #[error("no movie header (moov/mvhd): not an MP4 or MOV file")]
    NoMovieHeader,
    /// `mvhd` has a version other than 0 and 1.
    #[error("movie header version {0} is unknown")]
    UnknownVersion(u8),
    /// A timescale of 0, or the duration left unknown (all ones).
    #[error("the movie header gives no duration")]
    NoDuration,
}

/// The file's duration, by its movie header (`moov` → `mvhd`, version 0 or 1).
pub fn duration(bytes: &[u8]) -> Result<Duration, Mp4Error> {
    let moov = find_box(bytes, *b"moov")?;
    let mvhd = find_box(moov, *b"mvhd")?;
    let version = *mvhd.first().ok_or(Mp4Error::Truncated)?;
    // After version and flags: creation and modification times (32 or 64 bits each), the
    // timescale (units per second, 32 bits) and the duration in those units (32 or 64 bits).
    let (timescale, duration, unknown) = match version {
        0 => (be_u32(mvhd, 12)?, u64::from(be_u32(mvhd, 16)?), u64::from(u32::MAX)),
        1 => (be_u32(mvhd, 20)?, be_u64(mvhd, 24)?, u64::MAX),
        other => return Err(Mp4Error::UnknownVersion(other)),
    };
    if timescale == 0 || duration == unknown {
        return Err(Mp4Error::NoDuration);
    }
    let timescale = u64::from(timescale);
    let nanos = (u128::from(duration % timescale) * 1_000_000_000 / u128::from(timescale)) as u32;
    Ok(Duration::new(duration / timescale, nanos))
}

/// The payload of the first box of type `kind` among the boxes laid end to end in `bytes`.
fn find_box(mut bytes: &[u8], kind: [u8; 4]) -> Result<&[u8], Mp4Error> {
    while !bytes.is_empty() {
        let declared = u64::from(be_u32(bytes, 0)?);
        let box_type = bytes.get(4..8).ok_or(Mp4Error::Truncated)?;
        let (header, size) = match declared {
            // The last box, up to the end of the file.
            0 => (8, bytes.len() as u64),
            // A 64-bit size follows the type.
            1 => (16, be_u64(bytes, 8)?),
            small => (8, small),
        };
        if size < header {
            return Err(Mp4Error::Malformed);
        }
        let size = usize::try_from(size).map_err(|_| Mp4Error::Truncated)?;
        let contents = bytes.get(header as usize..size).ok_or(Mp4Error::Truncated)?;
        if box_type == kind {
            return Ok(contents);
        }
        bytes = &bytes[size..];
    }
    Err(Mp4Error::NoMovieHeader)
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, Mp4Error> {
    let field = bytes.get(at..at + 4).ok_or(Mp4Error::Truncated)?;
    Ok(u32::from_be_bytes(field.try_into().expect("four bytes")))
}

fn be_u64(bytes: &[u8], at: usize) -> Result<u64, Mp4Error> {
    let field = bytes.get(at..at + 8).ok_or(Mp4Error::Truncated)?;
    Ok(u64::from_be_bytes(field.try_into().expect("eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sandbox's sample: 3 s, `moov` (with a version 0 `mvhd`) before `mdat`.
    const SAMPLE: &[u8] = include_bytes!("../../sandbox/assets/sample.mp4");

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        [&u32::try_from(body.len() + 8).unwrap().to_be_bytes(), kind.as_slice(), body].concat()
    }

    /// A version 1 `mvhd`: 64-bit times and duration.
    fn mvhd_v1(timescale: u32, duration: u64) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0];
        body.extend_from_slice(&[0xAB; 16]);
        body.extend_from_slice(&timescale.to_be_bytes());
        body.extend_from_slice(&duration.to_be_bytes());
        body.extend_from_slice(&[0; 80]); // rate, volume, matrix, next track id
        boxed(b"mvhd", &body)
    }

    /// `ftyp`, a `mdat` with a 64-bit size, then `moov`: as a camera writes a long recording.
    fn moov_after_large_mdat(mvhd: &[u8]) -> Vec<u8> {
        let mut file = boxed(b"ftyp", b"qt  \0\0\0\0qt  ");
        let media = [0x55u8; 1000];
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(b"mdat");
        file.extend_from_slice(&(16 + media.len() as u64).to_be_bytes());
        file.extend_from_slice(&media);
        let moov = [boxed(b"trak", &[0; 24]), mvhd.to_vec()].concat();
        file.extend(boxed(b"moov", &moov));
        file
    }

    #[test]
    fn the_sample_lasts_three_seconds() {
        assert_eq!(duration(SAMPLE), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn a_version_1_header_after_a_64_bit_mdat_is_found() {
        // 14 h 0.25 s at 90 kHz: past what a version 0 header's 32 bits can hold at that rate.
        let file = moov_after_large_mdat(&mvhd_v1(90_000, 4_536_022_500));
        assert_eq!(duration(&file), Ok(Duration::from_millis(50_400_250)));
        let long = moov_after_large_mdat(&mvhd_v1(1, u64::from(u32::MAX) + 10));
        assert_eq!(duration(&long), Ok(Duration::from_secs(u64::from(u32::MAX) + 10)));
    }

    #[test]
    fn the_sample_moved_behind_its_media_is_still_three_seconds() {
        // ftyp (32) + moov (4260) + free (8) + mdat: put moov last, and the last box sized 0
        // ("to the end of the file").
        let (ftyp, rest) = SAMPLE.split_at(32);
        let (moov, media) = rest.split_at(4260);
        let mut file = [ftyp, media, moov].concat();
        assert_eq!(duration(&file), Ok(Duration::from_secs(3)));
        let moov_at = file.len() - moov.len();
        file[moov_at..moov_at + 4].copy_from_slice(&[0; 4]);
        assert_eq!(duration(&file), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn truncated_or_foreign_input_is_an_error_never_a_panic() {
        for cut in [0, 3, 7, 8, 31, 32, 39, 60, 147] {
            let error = duration(&SAMPLE[..cut]).unwrap_err();
            assert!(matches!(error, Mp4Error::Truncated | Mp4Error::NoMovieHeader), "cut at {cut}: {error:?}");
        }
        // moov is last: cut anywhere into it, or into the mdat before it.
        let file = moov_after_large_mdat(&mvhd_v1(600, 1200));
        for cut in [50, file.len() - 100, file.len() - 1] {
            assert_eq!(duration(&file[..cut]), Err(Mp4Error::Truncated), "cut at {cut}");
        }
        assert_eq!(duration(b"\x1aE\xdf\xa3 a WebM file, not an MP4"), Err(Mp4Error::Truncated));
        assert_eq!(duration(&boxed(b"ftyp", b"isom")), Err(Mp4Error::NoMovieHeader));
        assert_eq!(duration(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']), Err(Mp4Error::Malformed));
        let huge = [&[0, 0, 0, 1], b"mdat".as_slice(), &u64::MAX.to_be_bytes()].concat();
        assert_eq!(duration(&huge), Err(Mp4Error::Truncated));
    }

    #[test]
    fn a_header_without_a_duration_says_so() {
        assert_eq!(duration(&boxed(b"moov", &mvhd_v1(0, 10))), Err(Mp4Error::NoDuration));
        assert_eq!(duration(&boxed(b"moov", &mvhd_v1(600, u64::MAX))), Err(Mp4Error::NoDuration));
        let mut v2 = mvhd_v1(600, 10);
        v2[8] = 2;
        assert_eq!(duration(&boxed(b"moov", &v2)), Err(Mp4Error::UnknownVersion(2)));
        assert_eq!(duration(&boxed(b"moov", &boxed(b"mvhd", &[0; 10]))), Err(Mp4Error::Truncated));
    }
}
