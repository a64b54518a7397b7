use super::*;

fn run(pieces: &[&str]) -> Vec<AnswerPiece> {
    let mut filter = MediaLines::new(vec![PathBuf::from("/srv/media")]);
    let mut out = Vec::new();
    for piece in pieces {
        filter.feed(piece, &mut out);
    }
    filter.finish(&mut out);
    out
}

fn text(pieces: &[AnswerPiece]) -> String {
    pieces
        .iter()
        .filter_map(|piece| if let AnswerPiece::Text(text) = piece { Some(text.as_str()) } else { None })
        .collect()
}

#[test]
fn a_directive_split_across_pieces_becomes_an_attachment_and_no_text() {
    let out = run(&["Here you go:\nME", "DIA: https://cdn.test/c", "at.png\n", "Enjoy!"]);
    assert_eq!(text(&out), "Here you go:\nEnjoy!");
    let media: Vec<&AnswerPiece> = out.iter().filter(|piece| matches!(piece, AnswerPiece::Media { .. })).collect();
    assert_eq!(
        media,
        [&AnswerPiece::Media {
            url: "https://cdn.test/cat.png".into(),
            media_type: Some("image/png".into()),
            name: Some("cat.png".into()),
            media_id: None,
        }]
    );
}

#[test]
fn ordinary_text_is_not_held_back() {
    let mut filter = MediaLines::new(Vec::new());
    let mut out = Vec::new();
    filter.feed("Hello", &mut out);
    assert_eq!(out, [AnswerPiece::Text("Hello".into())], "not a prefix of MEDIA: goes on at once");
    out.clear();
    filter.feed(" MEDIA: mid-line is text", &mut out);
    assert_eq!(text(&out), " MEDIA: mid-line is text");
    out.clear();
    filter.feed("\nMED", &mut out);
    assert_eq!(text(&out), "\n", "a possible directive is held");
    filter.feed("ICINE is good", &mut out);
    assert_eq!(text(&out), "\nMEDICINE is good");
}

#[test]
fn a_local_file_under_the_roots_is_to_be_stored_others_are_dropped_not_shown() {
    let out = run(&[
        "MEDIA: /etc/passwd\n",
        "MEDIA: /srv/media/a.png\n",
        "MEDIA: ../x\n",
        "MEDIA: /srv/media/../../etc/x\n",
        "done",
    ]);
    assert_eq!(
        out,
        [
            AnswerPiece::StoreMedia {
                source: MediaSource::File(PathBuf::from("/srv/media/a.png")),
                media_type: Some("image/png".into()),
                name: Some("a.png".into()),
            },
            AnswerPiece::Text("done".into())
        ]
    );
}

#[test]
fn a_directive_at_the_very_end_is_decided_at_finish() {
    let out = run(&["See\n", "MEDIA: https://x.test/report.pdf"]);
    assert_eq!(text(&out), "See\n");
    assert!(matches!(&out[1], AnswerPiece::Media { media_type: Some(kind), .. } if kind == "application/pdf"));
}
