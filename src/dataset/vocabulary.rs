//! The words scene captions are made of. The built-in model's tokenizer gives each word of
//! [`WORDS`] its own id, so a caption may use no other word; the phrase tables are where
//! [`caption`](super::scenes::caption) draws its synonyms, one table per attribute, so the
//! model learns that several phrasings mean the same picture.

/// Longest caption in words: the built-in text encoder reads 16 tokens per prompt.
pub const MAX_WORDS: usize = 16;

/// Phrases that follow the landscape ("... at dawn"), one list per time of day in
/// [`TimeOfDay`](super::scenes::TimeOfDay) order.
pub const TIME_PHRASES: [&[&str]; 5] = [
    &["at dawn", "at sunrise", "in the early morning"],
    &["during the day", "in daylight", "at noon"],
    &["at sunset", "at sundown"],
    &["at dusk", "at twilight"],
    &["at night", "in the night"],
];

/// Phrases that open a caption "... over the landscape", in time-of-day order.
pub const TIME_NOUNS: [&[&str]; 5] = [
    &["dawn", "sunrise", "a pink dawn"],
    &["daylight", "a clear day", "a bright day"],
    &["sunset", "an orange sunset", "a red sunset"],
    &["dusk", "twilight", "a purple dusk"],
    &["night", "a dark night"],
];

/// Colour words for "... under a ... sky", in time-of-day order.
pub const SKY_ADJECTIVES: [&[&str]; 5] = [
    &["pink", "peach", "dawn"],
    &["blue", "bright blue", "clear blue"],
    &["orange", "red", "sunset"],
    &["purple", "violet", "dusk"],
    &["night", "dark"],
];

/// The sun in the sky.
pub const SUN: &[&str] = &["the sun", "a bright sun", "a glowing sun"];
/// The moon in the sky.
pub const MOON: &[&str] = &["the moon", "a full moon", "a pale moon"];
/// Stars in a dusk or night sky.
pub const STARS: &[&str] = &["stars", "many stars", "bright stars"];
/// One or more clouds.
pub const CLOUDS: &[&str] = &["clouds", "some clouds", "fluffy clouds"];

/// Sand dunes filling the ground.
pub const DESERT: &[&str] = &["desert dunes", "sand dunes", "a desert"];
/// Bare mountain ranges.
pub const MOUNTAINS: &[&str] = &["mountains", "a mountain range", "mountain peaks"];
/// Mountain ranges with white caps.
pub const SNOWY_MOUNTAINS: &[&str] = &["snowy mountains", "snowcapped mountains", "snowy peaks"];
/// Water enclosed by land, with a grassy near shore.
pub const LAKE: &[&str] = &["a lake", "a calm lake", "a still lake"];
/// Water reaching the horizon.
pub const SEA: &[&str] = &["the sea", "the ocean", "a calm sea"];
/// Sand along the near edge of the sea.
pub const BEACH: &[&str] = &["a beach", "a sandy beach"];
/// A few large pines in the foreground.
pub const PINES: &[&str] = &["pine trees", "a few pines", "some pine trees"];
/// Rows of small pines along the horizon.
pub const FOREST: &[&str] = &["a forest", "a pine forest", "dense woods"];
/// Striped yellow and green farmland.
pub const FIELDS: &[&str] = &["fields", "farm fields", "wheat fields"];
/// Green rolling hills.
pub const HILLS: &[&str] = &["rolling hills", "green hills", "hills"];
/// Plain grass, named only when nothing else stands on the ground.
pub const MEADOW: &[&str] = &["a meadow", "a green meadow", "a grassy plain"];

/// Words the caption templates put between phrases.
pub const CONNECTIVES: &[&str] = &["a", "an", "and", "of", "over", "sky", "under", "view", "with"];

/// Every word a caption can contain, lowercase letters only. The order is the tokenizer's id
/// order, so new words go at the end. Groups:
/// - time of day: `dawn sunrise early morning day daylight noon clear bright sunset sundown
///   dusk twilight night dark`
/// - sky colours: `pink peach blue orange red purple violet`
/// - sky contents: `sun glowing moon full pale stars many clouds some fluffy`
/// - landscape: `desert dunes sand mountains mountain range peaks snowy snowcapped lake calm
///   still sea ocean beach sandy pine trees few pines forest dense woods fields farm wheat
///   rolling green hills meadow grassy plain`
/// - grammar: `a an the at in during and of over sky under view with`
pub const WORDS: &[&str] = &[
    // time of day
    "dawn",
    "sunrise",
    "early",
    "morning",
    "day",
    "daylight",
    "noon",
    "clear",
    "bright",
    "sunset",
    "sundown",
    "dusk",
    "twilight",
    "night",
    "dark", // sky colours
    "pink",
    "peach",
    "blue",
    "orange",
    "red",
    "purple",
    "violet", // sky contents
    "sun",
    "glowing",
    "moon",
    "full",
    "pale",
    "stars",
    "many",
    "clouds",
    "some",
    "fluffy", // landscape
    "desert",
    "dunes",
    "sand",
    "mountains",
    "mountain",
    "range",
    "peaks",
    "snowy",
    "snowcapped",
    "lake",
    "calm",
    "still",
    "sea",
    "ocean",
    "beach",
    "sandy",
    "pine",
    "trees",
    "few",
    "pines",
    "forest",
    "dense",
    "woods",
    "fields",
    "farm",
    "wheat",
    "rolling",
    "green",
    "hills",
    "meadow",
    "grassy",
    "plain",
    // grammar
    "a",
    "an",
    "the",
    "at",
    "in",
    "during",
    "and",
    "of",
    "over",
    "sky",
    "under",
    "view",
    "with",
];

/// The words of a caption, in order.
pub fn words(caption: &str) -> impl Iterator<Item = &str> {
    caption.split_whitespace()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every phrase of every table.
    fn all_phrases() -> Vec<&'static str> {
        let timed = TIME_PHRASES.iter().chain(&TIME_NOUNS).chain(&SKY_ADJECTIVES).copied();
        let tables = [
            SUN,
            MOON,
            STARS,
            CLOUDS,
            DESERT,
            MOUNTAINS,
            SNOWY_MOUNTAINS,
            LAKE,
            SEA,
            BEACH,
            PINES,
            FOREST,
            FIELDS,
            HILLS,
            MEADOW,
            CONNECTIVES,
        ];
        timed.chain(tables).flatten().copied().collect()
    }

    #[test]
    fn words_are_exactly_the_words_of_the_tables() {
        let from_tables: BTreeSet<&str> = all_phrases().into_iter().flat_map(words).collect();
        let listed: BTreeSet<&str> = WORDS.iter().copied().collect();
        assert_eq!(listed.len(), WORDS.len(), "WORDS has duplicates");
        assert_eq!(from_tables, listed);
    }

    #[test]
    fn words_are_lowercase_letters() {
        for w in WORDS {
            assert!(!w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()), "{w:?}");
        }
    }

    #[test]
    fn phrases_are_single_spaced_and_no_table_is_empty() {
        for phrase in all_phrases() {
            assert_eq!(words(phrase).collect::<Vec<_>>().join(" "), phrase);
        }
        assert!(TIME_PHRASES.iter().chain(&TIME_NOUNS).chain(&SKY_ADJECTIVES).all(|t| !t.is_empty()));
    }

    #[test]
    fn words_splits_on_whitespace() {
        assert_eq!(
            words(" snowy  mountains\tat dawn ").collect::<Vec<_>>(),
            ["snowy", "mountains", "at", "dawn"]
        );
    }
}
