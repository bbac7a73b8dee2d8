//! Reading neighbour-link frames off a stream; the frame format and its sans-IO codec are the
//! wire's, in [`schema::neighbour`] (re-exported here).

pub use schema::neighbour::*;

/// Reads one frame from `reader`: the prefix, the length check, then exactly that many bytes.
/// `Ok(None)` when the peer closed the stream cleanly between frames.
pub async fn read_frame<R>(reader: &mut R) -> Result<Option<Frame>, std::io::Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; PREFIX_LEN];
    let mut got = 0;
    while got < PREFIX_LEN {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame prefix",
                ))
            };
        }
        got += n;
    }
    let len = body_len(prefix).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Frame::parse_body(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_frame_reads_back_to_back_frames_and_a_clean_end() {
        let mut wire = Frame::Ack { id: 1 }.encode().unwrap();
        wire.extend(
            Frame::Refused {
                id: 2,
                reason: "busy".into(),
            }
            .encode()
            .unwrap(),
        );
        let mut reader = &wire[..];
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some(Frame::Ack { id: 1 })
        );
        assert!(matches!(
            read_frame(&mut reader).await.unwrap(),
            Some(Frame::Refused { id: 2, .. })
        ));
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);
        let mut torn = &wire[..2];
        assert!(read_frame(&mut torn).await.is_err());
    }
}
