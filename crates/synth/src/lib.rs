//! A deterministic generator of realistic synthetic Jetstream events.
//!
//! The mock Jetstream server, the load test, the benchmarks and many tests need a stream that
//! looks like the live firehose without the network: the real mix of kinds and collections,
//! identifiers shaped like the real ones, a few very active accounts, post texts of realistic
//! length, replies, embeds and facets in realistic shares, and `time_us` advancing at a given
//! rate. [`Generator`] produces it, the same sequence for the same [`Config`].
//!
//! # The mix
//!
//! Shares of events (from observations of the 2024–2026 firehose): likes 55%, follows 14%,
//! posts 10%, reposts 9%, deletes 3%, other collections 3% (`fm.teal.*`, `place.stream.*`,
//! threadgates, ...), blocks 2%, profiles 1.5%, list items 1.5%, identity 0.5%, account 0.5%.
//! Of posts: about half are replies, 20% carry images, 10% a link card, 7% a quote, 2% a
//! quote with media, 3% a video; 10% mention someone, 8% link, 7% use hashtags.
//!
//! # What likes, reposts, replies and quotes point at
//!
//! The subjects of engagement decide how often the same subject URI and CID repeat within a
//! file, and so how much of the Parquet a dictionary saves; they follow what was observed:
//!
//! - 56% go to the day's popular posts: in a month of the firehose "1% of posts receive 56% of
//!   all interactions" (a public analysis of a month of 2025 firehose data). The popular posts are 1% of a day's posts
//!   at the live rate ([`POPULAR_POSTS`]), and how their engagement is shared among them is a
//!   Zipf law of exponent 0.56, from the same analysis's "0.01% of posts receive 470 likes,
//!   and 0.0001% receive 6,300": ln(6300 / 470) / ln(100) = 0.56. The most popular post then
//!   gets about 0.2% of all likes, some 1,800 an hour at the live rate.
//! - The rest go to the long tail: any account's post, of an age drawn from a log-normal law
//!   (median 2.3 hours, 1.1 decades of spread), fitted to the ages of the posts named in the
//!   real capture (`v1-capture-sample.jsonl`, from their TID record keys: of 142 references,
//!   12% are under 6 minutes old, 37% under an hour, 72% under 10 hours, 93% under 100 hours;
//!   the law gives 11, 37, 72 and 93%). Such a post is almost never named twice.
//!
//! Popular posts get the same law of ages. In the real capture no like or repost names a
//! subject an earlier one names (0 of 124, over less than a second); here 0.5% do over the
//! first thousand events, 20% within a file of 100,000 events (`firehose import`'s) and 28%
//! over 200,000. (Before, 90% of engagement went to the last 4,096 posts generated, the last
//! 80 seconds at the live rate: 48% of the first 173 likes and reposts, and 64% within a file
//! of 100,000 events, named a post named before, so the Parquet of generated events was
//! smaller than the real firehose's would be.)
//!
//! ```
//! use firehose_synth::{Config, Generator};
//! let events: Vec<_> = Generator::new(Config { seed: 7, ..Config::default() }).take(1000).collect();
//! let again: Vec<_> = Generator::new(Config { seed: 7, ..Config::default() }).take(1000).collect();
//! assert_eq!(events, again);
//! ```

mod ids;
mod text;

use std::borrow::Cow;

use firehose_core::record::{
    Blob, ByteSlice, Embed, EmbedRecord, External, Facet, FacetFeature, Image, Link, ReplyRef,
    SelfLabel, SelfLabels, nsid,
};
use firehose_core::{
    Account, Commit, Engagement, Event, GraphEdge, Identity, ListItem, Operation, Payload, Post,
    Profile, Record, StrongRef,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use ids::{cid, did_plc, rfc3339, tid};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Same seed, same events.
    pub seed: u64,
    /// `time_us` of the first event.
    pub start_time_us: i64,
    /// Events per second of `time_us` (the gap between consecutive events is `1e6 / rate` µs,
    /// at least 1 µs, so `time_us` strictly increases).
    pub rate: f64,
    /// Number of distinct accounts; activity among them is skewed (a few are very active).
    pub accounts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            // 2026-11-20T00:00:00Z
            start_time_us: 1_763_596_800_000_000 + 365 * 86_400_000_000,
            rate: 500.0,
            accounts: 200_000,
        }
    }
}

/// How many posts are popular at any time: 1% of a day's posts at the live rate (500 events/s,
/// 10% of them posts). See the crate docs.
pub const POPULAR_POSTS: u64 = 43_200;
/// The share of engagement that goes to the popular posts.
const POPULAR_SHARE: f64 = 0.56;
/// The exponent of the Zipf law that shares engagement among the popular posts.
const POPULAR_ZIPF: f64 = 0.56;
/// Ages of the posts engagement names: log-normal, median 2.3 h (10^0.36 hours), and the
/// standard deviation of log10(age in hours).
const AGE_LOG10_HOURS_MEDIAN: f64 = 0.36;
const AGE_LOG10_HOURS_SIGMA: f64 = 1.1;

/// Generates events; an endless [`Iterator`].
#[derive(Debug)]
pub struct Generator {
    rng: SmallRng,
    config: Config,
    /// Time of the next event, in fractional microseconds so any rate is exact on average.
    clock: f64,
    last_time_us: i64,
    seq: i64,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: Config) -> Self {
        Generator {
            rng: SmallRng::seed_from_u64(config.seed),
            clock: config.start_time_us as f64,
            last_time_us: config.start_time_us - 1,
            seq: 31_527_015_322,
            config,
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event<'static> {
        let time_us = self.tick();
        let did = self.author();
        let roll: f64 = self.rng.random();
        let payload = match roll {
            r if r < 0.550 => self.commit(time_us, nsid::LIKE),
            r if r < 0.690 => self.commit(time_us, nsid::FOLLOW),
            r if r < 0.790 => self.commit(time_us, nsid::POST),
            r if r < 0.880 => self.commit(time_us, nsid::REPOST),
            r if r < 0.910 => self.delete(time_us),
            r if r < 0.940 => self.other_collection(time_us),
            r if r < 0.960 => self.commit(time_us, nsid::BLOCK),
            r if r < 0.975 => self.commit(time_us, nsid::PROFILE),
            r if r < 0.990 => self.commit(time_us, nsid::LISTITEM),
            r if r < 0.995 => self.identity(time_us, &did),
            _ => self.account(time_us, &did),
        };
        Event {
            did: Cow::Owned(did),
            time_us,
            payload,
        }
    }

    /// The next event as one line of Jetstream JSON (no newline).
    pub fn next_json(&mut self) -> String {
        self.next_event().to_json()
    }

    fn tick(&mut self) -> i64 {
        let step = (1e6 / self.config.rate.max(1e-3)).max(1.0);
        self.clock += step;
        let t = (self.clock as i64).max(self.last_time_us + 1);
        self.last_time_us = t;
        t
    }

    /// A DID drawn with skew: index `n * u^3` puts ~22% of activity on the top 1% of accounts.
    fn account_index(&mut self) -> u32 {
        let u: f64 = self.rng.random();
        ((f64::from(self.config.accounts.max(1)) * u * u * u) as u32)
            .min(self.config.accounts.saturating_sub(1))
    }

    fn author(&mut self) -> String {
        let i = self.account_index();
        did_plc(self.config.seed, i)
    }

    fn tid_at(&mut self, time_us: i64) -> String {
        let clock_id = self.rng.random_range(0..1024);
        tid(time_us, clock_id)
    }

    fn cid(&mut self) -> String {
        cid(&mut self.rng)
    }

    fn created_at(&mut self, time_us: i64) -> Option<Cow<'static, str>> {
        let lag = self.rng.random_range(0..2_000_000);
        Some(Cow::Owned(rfc3339(time_us - lag)))
    }

    /// The post a like, repost, reply, quote or pinned post names (see the crate docs).
    fn subject_post(&mut self) -> StrongRef<'static> {
        if self.rng.random_bool(POPULAR_SHARE) {
            let u: f64 = self.rng.random();
            return self.popular_post(zipf_rank(u, POPULAR_POSTS, POPULAR_ZIPF));
        }
        let did = self.author();
        let normal = standard_normal(self.rng.random(), self.rng.random());
        let rkey = self.tid_at(self.last_time_us - post_age_us(normal));
        StrongRef {
            uri: Cow::Owned(format!("at://{did}/{}/{rkey}", nsid::POST)),
            cid: Cow::Owned(self.cid()),
        }
    }

    /// Popular post `rank`: the same URI and CID every time, from the seed and the rank alone.
    fn popular_post(&self, rank: u64) -> StrongRef<'static> {
        let seed = self.config.seed;
        let mut rng = SmallRng::seed_from_u64(ids::mix(seed ^ rank.wrapping_mul(0x2545_f491)));
        // Popular posts come from active accounts more often, as all activity does.
        let u: f64 = rng.random();
        let accounts = self.config.accounts.max(1);
        let account = ((f64::from(accounts) * u * u * u) as u32).min(accounts - 1);
        let age = post_age_us(standard_normal(rng.random(), rng.random()));
        let rkey = tid(self.config.start_time_us - age, rng.random_range(0..1024));
        StrongRef {
            uri: Cow::Owned(format!(
                "at://{}/{}/{rkey}",
                did_plc(seed, account),
                nsid::POST
            )),
            cid: Cow::Owned(cid(&mut rng)),
        }
    }

    fn commit(&mut self, time_us: i64, collection: &'static str) -> Payload<'static> {
        let rkey = if collection == nsid::PROFILE {
            "self".to_owned()
        } else {
            self.tid_at(time_us)
        };
        // Profiles are mostly edited; a few posts are edited too.
        let updated = match collection {
            nsid::PROFILE => self.rng.random_bool(0.8),
            nsid::POST => self.rng.random_bool(0.002),
            _ => false,
        };
        let operation = if updated {
            Operation::Update
        } else {
            Operation::Create
        };
        let record = match collection {
            nsid::LIKE => Record::Like(self.engagement(time_us, collection)),
            nsid::REPOST => Record::Repost(self.engagement(time_us, collection)),
            nsid::FOLLOW | nsid::BLOCK => Record::Follow(GraphEdge {
                record_type: Some(Cow::Borrowed(collection)),
                subject: Cow::Owned(self.author()),
                created_at: self.created_at(time_us),
            }),
            nsid::LISTITEM => {
                let owner = self.author();
                let list = format!(
                    "at://{owner}/app.bsky.graph.list/{}",
                    self.tid_at(time_us - 1_000_000_000)
                );
                Record::ListItem(ListItem {
                    record_type: Some(Cow::Borrowed(collection)),
                    subject: Cow::Owned(self.author()),
                    list: Cow::Owned(list),
                    created_at: self.created_at(time_us),
                })
            }
            nsid::PROFILE => Record::Profile(Box::new(self.profile(time_us))),
            _ => Record::Post(Box::new(self.post(time_us))),
        };
        // Blocks share GraphEdge with follows; re-wrap so the record matches its collection.
        let record = match (collection, record) {
            (nsid::BLOCK, Record::Follow(edge)) => Record::Block(edge),
            (_, record) => record,
        };
        let cid = self.cid();
        Payload::Commit(Commit {
            rev: Cow::Owned(self.tid_at(time_us)),
            operation,
            collection: Cow::Borrowed(collection),
            rkey: Cow::Owned(rkey),
            record: Some(record),
            cid: Some(Cow::Owned(cid)),
        })
    }

    fn engagement(&mut self, time_us: i64, collection: &'static str) -> Engagement<'static> {
        let subject = self.subject_post();
        let via = if self.rng.random_bool(0.08) {
            let did = self.author();
            let rkey = self.tid_at(time_us - 60_000_000);
            Some(StrongRef {
                uri: Cow::Owned(format!("at://{did}/{}/{rkey}", nsid::REPOST)),
                cid: Cow::Owned(self.cid()),
            })
        } else {
            None
        };
        Engagement {
            record_type: Some(Cow::Borrowed(collection)),
            subject,
            via,
            created_at: self.created_at(time_us),
        }
    }

    fn post(&mut self, time_us: i64) -> Post<'static> {
        let mut text = text::sentence(&mut self.rng);
        let mut facets = Vec::new();
        if self.rng.random_bool(0.10) {
            let did = self.author();
            let handle = text::handle(&mut self.rng);
            facets.push(self.append_facet(
                &mut text,
                &format!("@{handle}"),
                FacetFeature {
                    feature_type: Some(Cow::Borrowed("app.bsky.richtext.facet#mention")),
                    did: Some(Cow::Owned(did)),
                    ..FacetFeature::default()
                },
            ));
        }
        if self.rng.random_bool(0.08) {
            let url = text::url(&mut self.rng);
            facets.push(self.append_facet(
                &mut text,
                &url.clone(),
                FacetFeature {
                    feature_type: Some(Cow::Borrowed("app.bsky.richtext.facet#link")),
                    uri: Some(Cow::Owned(url)),
                    ..FacetFeature::default()
                },
            ));
        }
        if self.rng.random_bool(0.07) {
            let tag = text::word(&mut self.rng).to_owned();
            facets.push(self.append_facet(
                &mut text,
                &format!("#{tag}"),
                FacetFeature {
                    feature_type: Some(Cow::Borrowed("app.bsky.richtext.facet#tag")),
                    tag: Some(Cow::Owned(tag)),
                    ..FacetFeature::default()
                },
            ));
        }
        let reply = if self.rng.random_bool(0.5) {
            let parent = self.subject_post();
            let root = if self.rng.random_bool(0.6) {
                parent.clone()
            } else {
                self.subject_post()
            };
            Some(ReplyRef { root, parent })
        } else {
            None
        };
        let langs = if self.rng.random_bool(0.92) {
            Some(vec![Cow::Borrowed(text::lang(&mut self.rng))])
        } else {
            None
        };
        Post {
            record_type: Some(Cow::Borrowed(nsid::POST)),
            text: Some(Cow::Owned(text)),
            created_at: self.created_at(time_us),
            langs,
            reply,
            embed: self.embed(),
            facets: (!facets.is_empty()).then_some(facets),
            labels: self.rng.random_bool(0.01).then(|| SelfLabels {
                labels_type: Some(Cow::Borrowed("com.atproto.label.defs#selfLabels")),
                values: vec![SelfLabel {
                    val: Cow::Borrowed("nudity"),
                }],
            }),
            tags: self
                .rng
                .random_bool(0.01)
                .then(|| vec![Cow::Owned(text::word(&mut self.rng).to_owned())]),
        }
    }

    /// Appends ` token` to `text` and returns the facet covering it (byte offsets).
    fn append_facet(
        &mut self,
        text: &mut String,
        token: &str,
        feature: FacetFeature<'static>,
    ) -> Facet<'static> {
        text.push(' ');
        let start = text.len() as u64;
        text.push_str(token);
        Facet {
            index: Some(ByteSlice {
                byte_start: start,
                byte_end: text.len() as u64,
            }),
            features: vec![feature],
        }
    }

    fn blob(&mut self, mime: &'static str, size: std::ops::Range<u64>) -> Blob<'static> {
        Blob {
            blob_type: Some(Cow::Borrowed("blob")),
            link: Some(Link {
                link: Cow::Owned(self.cid()),
            }),
            cid: None,
            mime_type: Some(Cow::Borrowed(mime)),
            size: Some(self.rng.random_range(size)),
        }
    }

    fn images(&mut self) -> Embed<'static> {
        let n = self.rng.random_range(1..=4);
        let images = (0..n)
            .map(|_| Image {
                alt: Some(Cow::Owned(if self.rng.random_bool(0.3) {
                    text::sentence(&mut self.rng)
                } else {
                    String::new()
                })),
                image: Some(self.blob("image/jpeg", 50_000..1_000_000)),
            })
            .collect();
        Embed {
            embed_type: Some(Cow::Borrowed("app.bsky.embed.images")),
            images: Some(images),
            ..Embed::default()
        }
    }

    fn external(&mut self) -> Embed<'static> {
        Embed {
            embed_type: Some(Cow::Borrowed("app.bsky.embed.external")),
            external: Some(External {
                uri: Some(Cow::Owned(text::url(&mut self.rng))),
                title: Some(Cow::Owned(text::sentence(&mut self.rng))),
                description: Some(Cow::Owned(text::sentence(&mut self.rng))),
            }),
            ..Embed::default()
        }
    }

    fn embed(&mut self) -> Option<Embed<'static>> {
        let roll: f64 = self.rng.random();
        Some(match roll {
            r if r < 0.20 => self.images(),
            r if r < 0.30 => self.external(),
            r if r < 0.37 => {
                let quoted = self.subject_post();
                Embed {
                    embed_type: Some(Cow::Borrowed("app.bsky.embed.record")),
                    record: Some(EmbedRecord {
                        uri: Some(quoted.uri),
                        cid: Some(quoted.cid),
                        ..EmbedRecord::default()
                    }),
                    ..Embed::default()
                }
            }
            r if r < 0.39 => {
                let quoted = self.subject_post();
                Embed {
                    embed_type: Some(Cow::Borrowed("app.bsky.embed.recordWithMedia")),
                    record: Some(EmbedRecord {
                        embed_type: Some(Cow::Borrowed("app.bsky.embed.record")),
                        record: Some(quoted),
                        ..EmbedRecord::default()
                    }),
                    media: Some(Box::new(self.images())),
                    ..Embed::default()
                }
            }
            r if r < 0.42 => Embed {
                embed_type: Some(Cow::Borrowed("app.bsky.embed.video")),
                video: Some(self.blob("video/mp4", 1_000_000..50_000_000)),
                ..Embed::default()
            },
            _ => return None,
        })
    }

    fn profile(&mut self, time_us: i64) -> Profile<'static> {
        Profile {
            record_type: Some(Cow::Borrowed(nsid::PROFILE)),
            display_name: Some(Cow::Owned(text::display_name(&mut self.rng))),
            description: self
                .rng
                .random_bool(0.8)
                .then(|| Cow::Owned(text::sentence(&mut self.rng))),
            avatar: self
                .rng
                .random_bool(0.9)
                .then(|| self.blob("image/jpeg", 10_000..1_000_000)),
            banner: self
                .rng
                .random_bool(0.5)
                .then(|| self.blob("image/jpeg", 50_000..1_000_000)),
            pinned_post: self.rng.random_bool(0.2).then(|| self.subject_post()),
            created_at: self.created_at(time_us),
        }
    }

    fn delete(&mut self, time_us: i64) -> Payload<'static> {
        let collection = match self.rng.random_range(0..10) {
            0..=5 => nsid::LIKE,
            6..=7 => nsid::REPOST,
            8 => nsid::FOLLOW,
            _ => nsid::POST,
        };
        let back = self.rng.random_range(0..30 * 86_400_000_000i64);
        Payload::Commit(Commit {
            rev: Cow::Owned(self.tid_at(time_us)),
            operation: Operation::Delete,
            collection: Cow::Borrowed(collection),
            rkey: Cow::Owned(self.tid_at(time_us - back)),
            record: None,
            cid: None,
        })
    }

    fn other_collection(&mut self, time_us: i64) -> Payload<'static> {
        const OTHERS: [&str; 8] = [
            "fm.teal.alpha.feed.play",
            "place.stream.chat.message",
            "app.bsky.feed.threadgate",
            "app.bsky.feed.postgate",
            "app.bsky.graph.starterpack",
            "chat.bsky.actor.declaration",
            "sh.tangled.repo",
            "app.bsky.actor.status",
        ];
        let collection = OTHERS[self.rng.random_range(0..OTHERS.len())];
        let created = rfc3339(time_us);
        let subject = self.subject_post();
        let record = serde_json::json!({
            "$type": collection,
            "createdAt": created,
            "name": text::sentence(&mut self.rng),
            "post": subject.uri,
            "allow": [{"$type": format!("{collection}#followingRule")}],
        });
        let rkey = self.tid_at(time_us);
        let cid = self.cid();
        Payload::Commit(Commit {
            rev: Cow::Owned(self.tid_at(time_us)),
            operation: Operation::Create,
            collection: Cow::Borrowed(collection),
            rkey: Cow::Owned(rkey),
            record: Some(Record::Other(Cow::Owned(record.to_string()))),
            cid: Some(Cow::Owned(cid)),
        })
    }

    fn identity(&mut self, time_us: i64, did: &str) -> Payload<'static> {
        self.seq += 1;
        Payload::Identity(Identity {
            did: Cow::Owned(did.to_owned()),
            handle: Some(Cow::Owned(format!(
                "{}.bsky.social",
                text::handle(&mut self.rng)
            ))),
            seq: self.seq,
            time: Cow::Owned(rfc3339(time_us - 300_000)),
        })
    }

    fn account(&mut self, time_us: i64, did: &str) -> Payload<'static> {
        self.seq += 1;
        let active = self.rng.random_bool(0.7);
        let status = (!active).then(|| {
            const STATUS: [&str; 4] = ["deactivated", "deleted", "takendown", "suspended"];
            Cow::Borrowed(STATUS[self.rng.random_range(0..STATUS.len())])
        });
        Payload::Account(Account {
            active,
            did: Cow::Owned(did.to_owned()),
            seq: self.seq,
            time: Cow::Owned(rfc3339(time_us - 300_000)),
            status,
        })
    }
}

/// A rank in `0..n` drawn from `u` in `[0, 1)` by a Zipf law of exponent `s` (`s < 1`), by
/// inverting the continuous approximation of its distribution.
fn zipf_rank(u: f64, n: u64, s: f64) -> u64 {
    let e = 1.0 - s;
    let top = (n as f64 + 1.0).powf(e);
    let x = (1.0 + u * (top - 1.0)).powf(1.0 / e);
    (x as u64).saturating_sub(1).min(n.saturating_sub(1))
}

/// A standard normal deviate from two uniform ones in `[0, 1)` (Box-Muller).
fn standard_normal(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The age of a post named by engagement, in microseconds, for a standard normal deviate:
/// log-normal, at least a second, at most two years.
fn post_age_us(normal: f64) -> i64 {
    let hours = 10f64.powf(AGE_LOG10_HOURS_MEDIAN + AGE_LOG10_HOURS_SIGMA * normal);
    (hours * 3.6e9).clamp(1e6, 2.0 * 365.0 * 86_400e6) as i64
}

impl Iterator for Generator {
    type Item = Event<'static>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_event())
    }
}

/// Writes `n` events of `config` to `out`, one JSON object a line: a capture as Jetstream
/// would have sent it.
pub fn write_json_lines(
    config: Config,
    n: u64,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    for event in Generator::new(config).take(usize::try_from(n).unwrap_or(usize::MAX)) {
        serde_json::to_writer(&mut *out, &event).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `n` events of the default mix from `seed`, as JSON lines (no newlines): a ready corpus for
/// benchmarks and tests.
pub fn json_corpus(seed: u64, n: usize) -> Vec<String> {
    Generator::new(Config {
        seed,
        ..Config::default()
    })
    .take(n)
    .map(|e| e.to_json())
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use firehose_core::{Kind, Table};

    use super::*;

    #[test]
    fn every_event_decodes_back_to_itself() {
        for event in Generator::new(Config {
            seed: 1,
            ..Config::default()
        })
        .take(20_000)
        {
            let json = event.to_json();
            let decoded = Event::decode(json.as_bytes()).unwrap();
            assert_eq!(decoded, event, "{json}");
        }
    }

    #[test]
    fn the_mix_is_realistic() {
        let n = 100_000;
        let mut tables: HashMap<Table, usize> = HashMap::new();
        let mut kinds: HashMap<Kind, usize> = HashMap::new();
        let mut deletes = 0;
        let mut bytes = 0;
        for event in Generator::new(Config::default()).take(n) {
            *tables.entry(event.table()).or_default() += 1;
            *kinds.entry(event.kind()).or_default() += 1;
            deletes += usize::from(
                event
                    .commit()
                    .is_some_and(|c| c.operation == Operation::Delete),
            );
            bytes += event.to_json().len();
        }
        let share = |count: usize| count as f64 / n as f64;
        let likes = share(tables[&Table::Likes]);
        assert!((0.55..0.60).contains(&likes), "likes {likes}");
        assert!((0.13..0.16).contains(&share(tables[&Table::Follows])));
        assert!((0.09..0.12).contains(&share(tables[&Table::Posts])));
        assert!((0.08..0.11).contains(&share(tables[&Table::Reposts])));
        assert!((0.025..0.035).contains(&share(deletes)));
        assert!((0.025..0.035).contains(&share(tables[&Table::Records])));
        for t in Table::ALL {
            assert!(tables.get(&t).copied().unwrap_or(0) > 0, "no {t}");
        }
        assert!(kinds[&Kind::Identity] > 0 && kinds[&Kind::Account] > 0);
        let mean = bytes / n;
        assert!((450..750).contains(&mean), "mean event size {mean} bytes");
    }

    #[test]
    fn time_advances_at_the_rate_and_keys_are_unique() {
        let config = Config {
            rate: 1000.0,
            ..Config::default()
        };
        let start = config.start_time_us;
        let events: Vec<_> = Generator::new(config).take(10_000).collect();
        let last = events.last().unwrap().time_us;
        // 10,000 events at 1,000/s span 10 s of time_us.
        assert!(
            (9_990_000..=10_010_000).contains(&(last - start)),
            "{}",
            last - start
        );
        assert!(events.windows(2).all(|w| w[0].time_us < w[1].time_us));
        let keys: HashSet<_> = events.iter().map(|e| e.key()).collect();
        assert_eq!(keys.len(), events.len());
    }

    /// The time of a TID, in µs.
    fn tid_time_us(tid: &str) -> i64 {
        let v = tid.bytes().fold(0u64, |v, c| {
            let digit = b"234567abcdefghijklmnopqrstuvwxyz"
                .iter()
                .position(|&d| d == c)
                .unwrap();
            v << 5 | digit as u64
        });
        (v >> 10) as i64
    }

    #[test]
    fn engagement_names_posts_as_observed() {
        let n = 100_000;
        let mut per_subject: HashMap<String, usize> = HashMap::new();
        let mut ages_h = Vec::new();
        for e in Generator::new(Config::default()).take(n) {
            let Some(Record::Like(x) | Record::Repost(x)) =
                e.commit().and_then(|c| c.record.as_ref())
            else {
                continue;
            };
            let rkey = x.subject.uri.rsplit('/').next().unwrap();
            ages_h.push((e.time_us - tid_time_us(rkey)) as f64 / 3.6e9);
            *per_subject.entry(x.subject.uri.to_string()).or_default() += 1;
        }
        let rows = ages_h.len();
        // Ages: the log-normal law of the crate docs, median 2.3 h.
        ages_h.sort_by(f64::total_cmp);
        let median = ages_h[rows / 2];
        assert!((1.5..3.5).contains(&median), "median age {median} h");
        let under_an_hour = ages_h.iter().filter(|&&a| a < 1.0).count() as f64 / rows as f64;
        assert!((0.3..0.45).contains(&under_an_hour), "{under_an_hour}");
        // The most popular post gets about 0.2% of the engagement, and a fifth or so of the
        // likes and reposts name a post named before (the popular ones, mostly).
        let top = per_subject.values().max().copied().unwrap_or(0) as f64 / rows as f64;
        assert!((0.001..0.004).contains(&top), "top post share {top}");
        let repeated = (rows - per_subject.len()) as f64 / rows as f64;
        assert!((0.1..0.4).contains(&repeated), "repeated share {repeated}");
        // A same-second burst of likes on one post is rare, as in the real capture.
        let mut first_thousand: HashSet<String> = HashSet::new();
        let mut refs = 0;
        for e in Generator::new(Config::default()).take(1000) {
            if let Some(Record::Like(x) | Record::Repost(x)) =
                e.commit().and_then(|c| c.record.as_ref())
            {
                refs += 1;
                first_thousand.insert(x.subject.uri.to_string());
            }
        }
        assert!(
            refs - first_thousand.len() < refs / 20,
            "{refs} {}",
            first_thousand.len()
        );
    }

    #[test]
    fn activity_is_skewed() {
        let mut per_author: HashMap<String, usize> = HashMap::new();
        for e in Generator::new(Config::default()).take(50_000) {
            *per_author.entry(e.did.into_owned()).or_default() += 1;
        }
        let mut counts: Vec<_> = per_author.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts.iter().take(counts.len() / 100).sum();
        assert!(
            top as f64 > 0.1 * 50_000.0,
            "top 1% of authors wrote {top} events"
        );
    }
}
