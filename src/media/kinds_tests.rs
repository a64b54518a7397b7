use super::*;

/// The smallest valid PNG: signature, IHDR of a 1×1 image, IDAT, IEND.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn patterns_are_lowercase_types_or_wildcards() {
    for good in ["image/png", "image/*", "application/vnd.ms-excel", "text/plain"] {
        assert!(is_type_pattern(good), "{good}");
    }
    for bad in ["image", "Image/PNG", "*/*", "image/", "/png", "image/png; charset=x", "a/b/c"] {
        assert!(!is_type_pattern(bad), "{bad}");
    }
}

#[test]
fn a_content_type_becomes_its_canonical_essence() {
    assert_eq!(essence("Image/PNG").as_deref(), Some("image/png"));
    assert_eq!(essence("text/plain; charset=utf-8").as_deref(), Some("text/plain"));
    assert_eq!(essence("image/jpg").as_deref(), Some("image/jpeg"));
    assert_eq!(essence("nonsense"), None);
    assert_eq!(essence(""), None);
    assert_eq!(essence("image/png\"<x>"), None);
}

#[test]
fn allowed_types_match_exactly_or_by_wildcard() {
    let patterns = vec!["image/*".to_string(), "application/pdf".to_string()];
    assert!(allowed("image/png", &patterns));
    assert!(allowed("application/pdf", &patterns));
    assert!(!allowed("application/pdfx", &patterns));
    assert!(!allowed("text/plain", &patterns));
    assert!(!allowed("imagex/png", &patterns));
}

#[test]
fn images_and_pdf_are_recognized_by_their_bytes() {
    assert!(matches_bytes("image/png", PNG));
    assert!(!matches_bytes("image/png", b"<html><script>alert(1)</script>"));
    assert!(!matches_bytes("image/jpeg", PNG));
    assert!(matches_bytes("application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"));
    assert!(needs_magic("image/webp") && needs_magic("application/pdf"));
    assert!(!needs_magic("text/plain") && !needs_magic("image/svg+xml"));
    assert!(is_image("image/png") && !is_image("application/pdf") && !is_image("image/svg+xml"));
}

#[test]
fn nothing_that_runs_script_is_served_inline() {
    for inline in ["image/png", "application/pdf", "text/plain"] {
        assert!(served_inline(inline), "{inline}");
    }
    for attachment in
        ["text/html", "image/svg+xml", "application/xml", "text/xml", "application/javascript", "text/javascript"]
    {
        assert!(!served_inline(attachment), "{attachment}");
    }
}

#[test]
fn an_agents_file_is_typed_by_its_bytes_then_its_name() {
    assert_eq!(of_file(PNG, Some("chart.txt")), "image/png");
    assert_eq!(of_file(b"hello", Some("notes.txt")), "text/plain");
    assert_eq!(of_file(b"hello", Some("page.html")), UNKNOWN_TYPE);
    assert_eq!(of_file(b"hello", None), UNKNOWN_TYPE);
}

#[test]
fn names_keep_their_last_part_without_what_breaks_a_header() {
    assert_eq!(clean_name("../../etc/passwd").as_deref(), Some("passwd"));
    assert_eq!(clean_name("C:\\x\\report \"final\".pdf").as_deref(), Some("report final.pdf"));
    assert_eq!(clean_name("a\r\nb.png").as_deref(), Some("ab.png"));
    assert_eq!(clean_name(".hidden").as_deref(), Some("hidden"));
    assert_eq!(clean_name("/"), None);
    assert_eq!(clean_name(&"x".repeat(500)).map(|name| name.len()), Some(120));
}
