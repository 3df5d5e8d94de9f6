//! Words, sentences and names for post texts and profiles.

use rand::Rng;

const WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "of",
    "i",
    "is",
    "in",
    "it",
    "you",
    "that",
    "this",
    "for",
    "on",
    "my",
    "just",
    "so",
    "with",
    "be",
    "are",
    "not",
    "have",
    "but",
    "was",
    "me",
    "all",
    "what",
    "like",
    "love",
    "today",
    "people",
    "think",
    "good",
    "new",
    "time",
    "really",
    "know",
    "one",
    "day",
    "now",
    "here",
    "bluesky",
    "post",
    "art",
    "game",
    "music",
    "news",
    "world",
    "cat",
    "dog",
    "coffee",
    "morning",
    "night",
    "week",
    "thread",
    "photo",
    "book",
    "film",
    "city",
    "friend",
    "happy",
    "great",
    "thanks",
    "finally",
    "again",
    "never",
    "always",
    "please",
    "everyone",
    "weather",
    "vote",
    "science",
    "space",
    "rust",
    "code",
    "data",
    "open",
    "source",
    "café",
    "naïve",
    "日本語",
    "こんにちは",
    "olá",
    "größe",
    "🦋",
    "✨",
    "😂",
    "❤️",
    "🎉",
];

const LANGS: &[(&str, f64)] = &[
    ("en", 0.52),
    ("ja", 0.16),
    ("pt", 0.10),
    ("de", 0.05),
    ("es", 0.05),
    ("fr", 0.04),
    ("ko", 0.03),
    ("it", 0.02),
    ("nl", 0.02),
    ("zh", 0.01),
];

/// One word.
pub(crate) fn word(rng: &mut impl Rng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

/// A post-length text: 1 to 300 characters, most around 60 to 120, sometimes with a line break
/// or characters JSON must escape.
pub(crate) fn sentence(rng: &mut impl Rng) -> String {
    // The sum of two uniforms gives a hump around the middle with a long enough tail.
    let target = (rng.random_range(5..150) + rng.random_range(0..150)).min(300);
    let mut text = String::with_capacity(target + 16);
    while text.len() < target {
        if !text.is_empty() {
            text.push(if rng.random_bool(0.02) { '\n' } else { ' ' });
        }
        text.push_str(word(rng));
    }
    if rng.random_bool(0.05) {
        text.push_str(" \"quoted\"");
    }
    text
}

/// A handle's first label.
pub(crate) fn handle(rng: &mut impl Rng) -> String {
    let w = WORDS[rng.random_range(0..40)];
    format!("{w}{}", rng.random_range(0..10_000))
}

/// A display name.
pub(crate) fn display_name(rng: &mut impl Rng) -> String {
    format!("{} {}", word(rng), word(rng))
}

/// A link.
pub(crate) fn url(rng: &mut impl Rng) -> String {
    const HOSTS: &[&str] = &[
        "example.com",
        "news.example.org",
        "youtu.be",
        "github.com",
        "bsky.app",
    ];
    format!(
        "https://{}/{}/{}",
        HOSTS[rng.random_range(0..HOSTS.len())],
        word(rng),
        rng.random_range(0..100_000)
    )
}

/// A language tag, with the observed skew.
pub(crate) fn lang(rng: &mut impl Rng) -> &'static str {
    let mut u: f64 = rng.random();
    for &(lang, share) in LANGS {
        if u < share {
            return lang;
        }
        u -= share;
    }
    "en"
}
