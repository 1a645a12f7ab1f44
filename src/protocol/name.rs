//! Pipe names: from the SMB path a client opens to the flat name of the
//! service's socket (PROTOCOL.md section 1).

use std::fmt;

use super::status::NtStatus;

/// The longest flat pipe name, in bytes of UTF-8: illumos keeps the name in
/// a 32-byte buffer with its NUL (`SMB_OPIPE_MAXNAME`).
pub const MAX_PIPE_NAME_BYTES: usize = 31;

/// Lower-casing never shrinks a character to less than a third of its UTF-8
/// length (U+212A KELVIN SIGN, 3 bytes, becomes `k`), so a path longer than
/// this cannot become a valid name; [`PipeName::parse`] refuses it before
/// doing any work.
const MAX_PATH_BYTES_BEFORE_LOWERING: usize = 3 * MAX_PIPE_NAME_BYTES;

/// A validated flat pipe name such as `srvsvc`: the file name of the
/// service's socket inside the pipe directory.
///
/// It is one path component: not empty, not `.` or `..`, no `/`, `\` or NUL,
/// at most [`MAX_PIPE_NAME_BYTES`] bytes, lower-case. The only way to make
/// one is [`PipeName::parse`], so holding a `PipeName` means the check was
/// done.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PipeName(String);

impl PipeName {
    /// Turns the path an SMB client opened into a flat pipe name, the way
    /// illumos `smb_opipe_connect` does (PROTOCOL.md section 1), and then
    /// applies opipe's safety rule.
    ///
    /// Normalisation: skip every leading `\`; if the rest starts with `PIPE`
    /// in any case, skip those four characters and every `\` after them
    /// (like illumos, this also strips `pipe` from `\pipeline`, giving
    /// `line`); lower-case what is left.
    ///
    /// Lower-casing follows illumos `smb_strlwr` with its Unicode code page
    /// loaded: ASCII letters are lowered, and every other character of the
    /// Basic Multilingual Plane is lowered by its simple one-to-one Unicode
    /// mapping (characters whose lower case is several characters, such as
    /// U+0130, and characters outside the BMP are kept as they are, since
    /// illumos' 16-bit case table has no entry for them). Only lowering
    /// ASCII would differ from illumos on non-ASCII names; as illumos is
    /// itself inexact where a mapping changes the UTF-8 length (it assumes
    /// it never does), such names cannot be byte-compatible anyway, and the
    /// length rule below is checked after lowering.
    ///
    /// Safety rule: the result must be a single path component (no `/`,
    /// `\`, NUL or other control character such as a newline or an escape;
    /// not `.` or `..`; not empty) of at most
    /// [`MAX_PIPE_NAME_BYTES`] bytes. Anything else, including a name
    /// illumos would silently truncate, is
    /// `Err(NtStatus::OBJECT_NAME_INVALID)`. A name is never truncated.
    ///
    /// ```
    /// use opipe::protocol::PipeName;
    /// assert_eq!(PipeName::parse("\\PIPE\\SrvSvc").unwrap().as_str(), "srvsvc");
    /// assert_eq!(PipeName::parse("\\\\pipe\\\\LSARPC").unwrap().as_str(), "lsarpc");
    /// assert!(PipeName::parse("\\PIPE\\..\\x").is_err());
    /// ```
    pub fn parse(smb_path: &str) -> Result<PipeName, NtStatus> {
        let rest = smb_path.trim_start_matches('\\');
        let rest = match rest.get(..4) {
            Some(prefix) if prefix.eq_ignore_ascii_case("PIPE") => {
                rest.get(4..).unwrap_or("").trim_start_matches('\\')
            }
            _ => rest,
        };
        if rest.len() > MAX_PATH_BYTES_BEFORE_LOWERING {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        let name: String = rest.chars().map(lower_like_illumos).collect();
        if name.is_empty()
            || name.len() > MAX_PIPE_NAME_BYTES
            || name == "."
            || name == ".."
            || name.contains(['/', '\\'])
            || name.chars().any(char::is_control)
        {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        Ok(PipeName(name))
    }

    /// The flat name, for example `srvsvc`: the socket's file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name an open pipe reports to SMB clients: `\` and the flat name,
    /// for example `\srvsvc` (what the seed's `smb_opipe_getname` returns).
    pub fn smb_name(&self) -> String {
        let mut s = String::with_capacity(1 + self.0.len());
        s.push('\\');
        s.push_str(&self.0);
        s
    }

    /// The flat name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Lower-cases one character like illumos `smb_strlwr` (see
/// [`PipeName::parse`]).
fn lower_like_illumos(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if u32::from(c) > 0xFFFF {
        return c;
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

impl fmt::Display for PipeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PipeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(path: &str) -> String {
        match PipeName::parse(path) {
            Ok(n) => n.into_string(),
            Err(e) => panic!("{path:?} refused: {e}"),
        }
    }

    fn refused(path: &str) {
        assert_eq!(
            PipeName::parse(path),
            Err(NtStatus::OBJECT_NAME_INVALID),
            "{path:?}"
        );
    }

    #[test]
    fn protocol_md_examples() {
        assert_eq!(ok("\\PIPE\\SrvSvc"), "srvsvc");
        assert_eq!(ok("\\\\pipe\\\\LSARPC"), "lsarpc");
        assert_eq!(ok("winreg"), "winreg");
    }

    #[test]
    fn prefix_handling() {
        assert_eq!(ok("\\PiPe\\samr"), "samr");
        assert_eq!(ok("pipe\\samr"), "samr");
        assert_eq!(ok("\\\\\\PIPE\\\\\\\\netlogon"), "netlogon");
        // Like illumos: "PIPE" is stripped even without a backslash after it.
        assert_eq!(ok("\\pipeline"), "line");
        // Only one PIPE is stripped.
        assert_eq!(ok("\\PIPE\\PIPE"), "pipe");
        assert_eq!(ok("\\pip"), "pip");
        assert_eq!(ok("\\PIPE\\MixedCase_Name-1"), "mixedcase_name-1");
    }

    #[test]
    fn path_escapes_refused() {
        refused("\\PIPE\\..\\x");
        refused("..\\x");
        refused("\\PIPE\\a/b");
        refused("a/b");
        refused("a\\b");
        refused(".");
        refused("..");
        refused("\\PIPE\\.");
        refused("\\PIPE\\..");
        refused("/etc/passwd");
        refused("\\PIPE\\srv\0svc");
        refused("\0");
        // Control characters (a newline in a file name, an escape) too.
        refused("\\PIPE\\srv\nsvc");
        refused("a\tb");
        refused("x\u{1b}[2J");
        refused("del\u{7f}");
        refused("c1\u{85}");
        // Dots inside a name are fine.
        assert_eq!(ok("..."), "...");
        assert_eq!(ok("a.b"), "a.b");
    }

    #[test]
    fn empty_refused() {
        refused("");
        refused("\\");
        refused("\\\\\\");
        refused("\\PIPE\\");
        refused("\\PIPE");
        refused("pipe");
        refused("\\pipe\\\\\\");
    }

    #[test]
    fn length_limit_never_truncates() {
        let n31 = "a".repeat(31);
        let n32 = "a".repeat(32);
        assert_eq!(ok(&format!("\\PIPE\\{n31}")), n31);
        refused(&format!("\\PIPE\\{n32}"));
        refused(&format!("\\PIPE\\{}", "x".repeat(40)));
        refused(&"y".repeat(10_000));
        // Exactly 31 bytes after lowering, with upper case input.
        assert_eq!(ok(&format!("\\PIPE\\{}", "B".repeat(31))), "b".repeat(31));
    }

    #[test]
    fn multibyte_utf8() {
        // 'É' and 'é' are both two bytes.
        assert_eq!(ok("\\PIPE\\CAFÉ"), "café");
        // Greek capital sigma lowers one-to-one.
        assert_eq!(ok("ΣΑΜΡ"), "σαμρ");
        // 15 two-byte characters plus one byte = 31 bytes: accepted.
        let s = format!("{}x", "é".repeat(15));
        assert_eq!(s.len(), 31);
        assert_eq!(ok(&s), s);
        // 16 two-byte characters = 32 bytes: refused, not cut mid-character.
        refused(&"é".repeat(16));
        // U+0130 lowers to two characters: kept as it is.
        assert_eq!(ok("\u{130}x"), "\u{130}x");
        // Outside the BMP: kept (illumos' case table is 16-bit).
        assert_eq!(ok("\u{10400}"), "\u{10400}");
        // KELVIN SIGN (3 bytes) lowers to 'k' (1 byte): the length is
        // checked after lowering, so 31 of them fit.
        assert_eq!(ok(&"\u{212A}".repeat(31)), "k".repeat(31));
        // U+023A (2 bytes) lowers to U+2C65 (3 bytes): 12 of them are 24
        // bytes before and 36 after lowering.
        refused(&"\u{23A}".repeat(12));
    }

    #[test]
    fn smb_name_and_display() {
        let n = PipeName::parse("\\PIPE\\SrvSvc").unwrap();
        assert_eq!(n.smb_name(), "\\srvsvc");
        assert_eq!(n.to_string(), "srvsvc");
        assert_eq!(n.as_ref(), "srvsvc");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_result_is_safe(path in "\\PC{0,80}") {
            if let Ok(n) = PipeName::parse(&path) {
                let s = n.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_PIPE_NAME_BYTES);
                prop_assert!(s != "." && s != "..");
                prop_assert!(!s.contains(['/', '\\', '\0']));
                prop_assert!(!s.chars().any(char::is_control));
                // The flat name under the prefix parses to itself.
                prop_assert_eq!(PipeName::parse(&format!("\\PIPE\\{s}")), Ok(n.clone()));
            }
        }

        #[test]
        fn ascii_names_round_trip(name in "[a-z0-9_]{1,31}") {
            let path = format!("\\PIPE\\{}", name.to_ascii_uppercase());
            let parsed = PipeName::parse(&path).unwrap();
            prop_assert_eq!(parsed.as_str(), name.as_str());
        }
    }
}
