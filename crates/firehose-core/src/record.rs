//! Typed records for the collections users query most, in the shape of their lexicons.
//!
//! The structs mirror the lexicon JSON (so they both decode and re-encode it) and keep only the
//! fields the archive stores; unknown fields are ignored and missing optional ones are `None`.
//! Accessors such as [`Post::embed_kind`] flatten the nested shapes into the columns of the
//! Arrow tables.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};

use crate::de::{opt_str, opt_vec_str};

/// Collection NSIDs with a typed table.
pub mod nsid {
    /// A post.
    pub const POST: &str = "app.bsky.feed.post";
    /// A like of a post (or another record).
    pub const LIKE: &str = "app.bsky.feed.like";
    /// A repost.
    pub const REPOST: &str = "app.bsky.feed.repost";
    /// A follow of an account.
    pub const FOLLOW: &str = "app.bsky.graph.follow";
    /// A block of an account.
    pub const BLOCK: &str = "app.bsky.graph.block";
    /// An account added to a list.
    pub const LISTITEM: &str = "app.bsky.graph.listitem";
    /// A profile (always rkey `self`).
    pub const PROFILE: &str = "app.bsky.actor.profile";
}

/// The record of a commit: typed for known collections, the original JSON text otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// `app.bsky.feed.post` (boxed: posts are the largest record by far).
    Post(Box<Post<'a>>),
    /// `app.bsky.feed.like`.
    Like(Engagement<'a>),
    /// `app.bsky.feed.repost`.
    Repost(Engagement<'a>),
    /// `app.bsky.graph.follow`.
    Follow(GraphEdge<'a>),
    /// `app.bsky.graph.block`.
    Block(GraphEdge<'a>),
    /// `app.bsky.graph.listitem`.
    ListItem(ListItem<'a>),
    /// `app.bsky.actor.profile` (boxed: large and rare).
    Profile(Box<Profile<'a>>),
    /// Any other collection, or a record of a known collection that does not fit its typed
    /// shape: the record's JSON text exactly as received, so nothing is lost.
    Other(Cow<'a, str>),
}

impl<'a> Record<'a> {
    /// Decodes the record JSON of `collection`. Never fails: a record that does not fit the
    /// typed shape of its collection is kept as [`Record::Other`].
    pub fn parse(collection: &str, json: &'a str) -> Record<'a> {
        let mut de = serde_json::Deserializer::from_str(json);
        match Record::deserialize_typed(collection, &mut de).and_then(|r| de.end().map(|()| r)) {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => Record::Other(Cow::Borrowed(json)),
        }
    }

    /// Deserialises the typed record of a known `collection` (`None` for any other
    /// collection). Fails when the record does not fit the collection's typed shape.
    pub(crate) fn deserialize_typed<D: Deserializer<'a>>(
        collection: &str,
        de: D,
    ) -> Result<Option<Record<'a>>, D::Error> {
        Ok(Some(match collection {
            nsid::POST => Record::Post(Box::new(Post::deserialize(de)?)),
            nsid::LIKE => Record::Like(Engagement::deserialize(de)?),
            nsid::REPOST => Record::Repost(Engagement::deserialize(de)?),
            nsid::FOLLOW => Record::Follow(GraphEdge::deserialize(de)?),
            nsid::BLOCK => Record::Block(GraphEdge::deserialize(de)?),
            nsid::LISTITEM => Record::ListItem(ListItem::deserialize(de)?),
            nsid::PROFILE => Record::Profile(Box::new(Profile::deserialize(de)?)),
            _ => return Ok(None),
        }))
    }
}

/// A strong reference to a record: its `at://` URI and CID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongRef<'a> {
    /// `at://did/collection/rkey`.
    #[serde(borrow)]
    pub uri: Cow<'a, str>,
    /// The record's CID.
    #[serde(borrow)]
    pub cid: Cow<'a, str>,
}

/// `app.bsky.feed.post`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Post<'a> {
    /// `$type` as written in the record (normally the collection NSID).
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_type: Option<Cow<'a, str>>,
    /// The post's text.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    /// Client-declared creation time (RFC 3339, not validated: clients write what they like).
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Cow<'a, str>>,
    /// Declared languages (BCP-47 tags).
    #[serde(default, borrow, deserialize_with = "opt_vec_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub langs: Option<Vec<Cow<'a, str>>>,
    /// The thread this post replies to.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyRef<'a>>,
    /// Embedded images, video, link card or quoted record.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed: Option<Embed<'a>>,
    /// Rich-text facets: mentions, links and hashtags.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<Vec<Facet<'a>>>,
    /// Self-labels the author put on the post.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<SelfLabels<'a>>,
    /// Additional hashtags outside the text.
    #[serde(default, borrow, deserialize_with = "opt_vec_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Cow<'a, str>>>,
}

/// The root and parent of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRef<'a> {
    /// The first post of the thread.
    #[serde(borrow)]
    pub root: StrongRef<'a>,
    /// The post replied to.
    #[serde(borrow)]
    pub parent: StrongRef<'a>,
}

/// A post embed (`app.bsky.embed.*`), kept to the parts that are queried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed<'a> {
    /// `app.bsky.embed.images`, `.external`, `.record`, `.recordWithMedia` or `.video`.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_type: Option<Cow<'a, str>>,
    /// Images (`app.bsky.embed.images`).
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Image<'a>>>,
    /// A link card (`app.bsky.embed.external`).
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<External<'a>>,
    /// A quoted record: `{uri, cid}` in `.record`, `{record: {uri, cid}}` in `.recordWithMedia`.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<EmbedRecord<'a>>,
    /// The media half of `app.bsky.embed.recordWithMedia`.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Box<Embed<'a>>>,
    /// A video (`app.bsky.embed.video`).
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<Blob<'a>>,
}

/// One image of an images embed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image<'a> {
    /// Alt text.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<Cow<'a, str>>,
    /// The image blob.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Blob<'a>>,
}

/// A link card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct External<'a> {
    /// The linked URL.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Cow<'a, str>>,
    /// The card's title.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<Cow<'a, str>>,
    /// The card's description.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
}

/// The record part of a record embed, in either of its two shapes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedRecord<'a> {
    /// Set in `app.bsky.embed.record` (and inside recordWithMedia's `record`).
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_type: Option<Cow<'a, str>>,
    /// The quoted record's URI (`app.bsky.embed.record`).
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Cow<'a, str>>,
    /// The quoted record's CID (`app.bsky.embed.record`).
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<Cow<'a, str>>,
    /// The nested strong reference (`app.bsky.embed.recordWithMedia`).
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<StrongRef<'a>>,
}

/// A blob reference: `{"$type":"blob","ref":{"$link":CID},"mimeType","size"}`, or the legacy
/// `{"cid","mimeType"}` shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    /// `blob` in the current shape.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_type: Option<Cow<'a, str>>,
    /// The content link (current shape).
    #[serde(rename = "ref", default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<Link<'a>>,
    /// The CID (legacy shape).
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<Cow<'a, str>>,
    /// MIME type.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<Cow<'a, str>>,
    /// Size in bytes.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Blob<'_> {
    /// The blob's CID, whichever shape it came in.
    pub fn cid(&self) -> Option<&str> {
        self.link
            .as_ref()
            .map(|l| l.link.as_ref())
            .or(self.cid.as_deref())
    }
}

/// `{"$link": CID}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link<'a> {
    /// The CID.
    #[serde(rename = "$link", borrow)]
    pub link: Cow<'a, str>,
}

/// A rich-text facet: a byte range of the text and what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facet<'a> {
    /// The byte range in the UTF-8 text.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<ByteSlice>,
    /// Mentions, links and tags over that range.
    #[serde(default, borrow)]
    pub features: Vec<FacetFeature<'a>>,
}

/// A byte range `[byteStart, byteEnd)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ByteSlice {
    /// First byte.
    pub byte_start: u64,
    /// One past the last byte.
    pub byte_end: u64,
}

/// One facet feature: `#mention` has `did`, `#link` has `uri`, `#tag` has `tag`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetFeature<'a> {
    /// `app.bsky.richtext.facet#mention`, `#link` or `#tag`.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_type: Option<Cow<'a, str>>,
    /// The mentioned account.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<Cow<'a, str>>,
    /// The linked URL.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Cow<'a, str>>,
    /// The hashtag, without `#`.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Cow<'a, str>>,
}

/// `com.atproto.label.defs#selfLabels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfLabels<'a> {
    /// `com.atproto.label.defs#selfLabels`.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels_type: Option<Cow<'a, str>>,
    /// The labels.
    #[serde(default, borrow)]
    pub values: Vec<SelfLabel<'a>>,
}

/// One self-label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfLabel<'a> {
    /// The label value, e.g. `porn`, `nudity`, `!no-unauthenticated`.
    #[serde(borrow)]
    pub val: Cow<'a, str>,
}

impl Post<'_> {
    /// The embed kind without its `app.bsky.embed.` prefix: `images`, `external`, `record`,
    /// `recordWithMedia`, `video`, or whatever else a client wrote.
    pub fn embed_kind(&self) -> Option<&str> {
        let t = self.embed.as_ref()?.embed_type.as_deref()?;
        Some(t.strip_prefix("app.bsky.embed.").unwrap_or(t))
    }

    fn media(&self) -> impl Iterator<Item = &Embed<'_>> {
        let embed = self.embed.as_ref();
        embed
            .into_iter()
            .chain(embed.and_then(|e| e.media.as_deref()))
    }

    /// The URL of a link card, directly or as the media of a record-with-media embed.
    pub fn external_uri(&self) -> Option<&str> {
        self.media()
            .find_map(|e| e.external.as_ref()?.uri.as_deref())
    }

    /// The number of images, directly or as the media of a record-with-media embed.
    pub fn image_count(&self) -> Option<usize> {
        self.media().find_map(|e| e.images.as_ref().map(Vec::len))
    }

    /// The URI of a quoted record.
    pub fn quoted_uri(&self) -> Option<&str> {
        let record = self.embed.as_ref()?.record.as_ref()?;
        record
            .uri
            .as_deref()
            .or(record.record.as_ref().map(|r| r.uri.as_ref()))
    }

    fn features(&self) -> impl Iterator<Item = &FacetFeature<'_>> {
        self.facets.iter().flatten().flat_map(|f| f.features.iter())
    }

    /// DIDs mentioned in the text, in order.
    pub fn mentions(&self) -> impl Iterator<Item = &str> {
        self.features().filter_map(|f| f.did.as_deref())
    }

    /// URLs linked from the text, in order.
    pub fn links(&self) -> impl Iterator<Item = &str> {
        self.features().filter_map(|f| f.uri.as_deref())
    }

    /// Hashtags in the text (without `#`), in order.
    pub fn facet_tags(&self) -> impl Iterator<Item = &str> {
        self.features().filter_map(|f| f.tag.as_deref())
    }

    /// Self-label values.
    pub fn label_values(&self) -> impl Iterator<Item = &str> {
        self.labels
            .iter()
            .flat_map(|l| l.values.iter().map(|v| v.val.as_ref()))
    }
}

/// `app.bsky.feed.like` and `app.bsky.feed.repost`: a subject and, optionally, the repost
/// through which the author found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Engagement<'a> {
    /// `$type` as written in the record.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_type: Option<Cow<'a, str>>,
    /// The liked or reposted record.
    #[serde(borrow)]
    pub subject: StrongRef<'a>,
    /// The repost through which the subject was seen.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<StrongRef<'a>>,
    /// Client-declared creation time.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Cow<'a, str>>,
}

/// `app.bsky.graph.follow` and `app.bsky.graph.block`: an edge to another account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge<'a> {
    /// `$type` as written in the record.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_type: Option<Cow<'a, str>>,
    /// The followed or blocked DID.
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    /// Client-declared creation time.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Cow<'a, str>>,
}

/// `app.bsky.graph.listitem`: an account on a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListItem<'a> {
    /// `$type` as written in the record.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_type: Option<Cow<'a, str>>,
    /// The DID put on the list.
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    /// The list's `at://` URI.
    #[serde(borrow)]
    pub list: Cow<'a, str>,
    /// Client-declared creation time.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Cow<'a, str>>,
}

/// `app.bsky.actor.profile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile<'a> {
    /// `$type` as written in the record.
    #[serde(rename = "$type", default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_type: Option<Cow<'a, str>>,
    /// Display name.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Cow<'a, str>>,
    /// Bio.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// Avatar image.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Blob<'a>>,
    /// Banner image.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<Blob<'a>>,
    /// The pinned post.
    #[serde(default, borrow)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_post: Option<StrongRef<'a>>,
    /// Client-declared creation time.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Cow<'a, str>>,
}

impl Record<'_> {
    /// Encodes the record as lexicon JSON (for [`Record::Other`], the stored text as is).
    pub fn to_json(&self) -> String {
        let encoded = match self {
            Record::Post(r) => serde_json::to_string(r),
            Record::Like(r) | Record::Repost(r) => serde_json::to_string(r),
            Record::Follow(r) | Record::Block(r) => serde_json::to_string(r),
            Record::ListItem(r) => serde_json::to_string(r),
            Record::Profile(r) => serde_json::to_string(r),
            Record::Other(json) => return json.to_string(),
        };
        // Serialising these structs cannot fail: every field is a string, number, bool,
        // sequence or struct of those, with no map keys that are not strings.
        encoded.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_with_record_with_media_flattens() {
        let json = r#"{"$type":"app.bsky.feed.post","text":"hi @a #t","createdAt":"2026-01-01T00:00:00Z",
          "langs":["en"],"embed":{"$type":"app.bsky.embed.recordWithMedia",
          "media":{"$type":"app.bsky.embed.images","images":[{"alt":"","image":{"$type":"blob","ref":{"$link":"bafk1"},"mimeType":"image/jpeg","size":5}},{"alt":"x"}]},
          "record":{"$type":"app.bsky.embed.record","record":{"uri":"at://did:plc:q/app.bsky.feed.post/3k","cid":"bafq"}}},
          "facets":[{"index":{"byteStart":3,"byteEnd":5},"features":[{"$type":"app.bsky.richtext.facet#mention","did":"did:plc:a"}]},
                    {"index":{"byteStart":6,"byteEnd":8},"features":[{"$type":"app.bsky.richtext.facet#tag","tag":"t"}]}],
          "labels":{"$type":"com.atproto.label.defs#selfLabels","values":[{"val":"nudity"}]},"unknownField":{"a":[1,2]}}"#;
        let Record::Post(post) = Record::parse(nsid::POST, json) else {
            panic!("not typed")
        };
        assert_eq!(post.embed_kind(), Some("recordWithMedia"));
        assert_eq!(post.image_count(), Some(2));
        assert_eq!(
            post.quoted_uri(),
            Some("at://did:plc:q/app.bsky.feed.post/3k")
        );
        assert_eq!(post.mentions().collect::<Vec<_>>(), ["did:plc:a"]);
        assert_eq!(post.facet_tags().collect::<Vec<_>>(), ["t"]);
        assert_eq!(post.label_values().collect::<Vec<_>>(), ["nudity"]);
        assert_eq!(post.external_uri(), None);
    }

    #[test]
    fn record_of_wrong_shape_is_kept_as_json() {
        let json = r#"{"subject":42}"#;
        assert_eq!(
            Record::parse(nsid::LIKE, json),
            Record::Other(Cow::Borrowed(json))
        );
        let json = r#"{"text":["not","a","string"]}"#;
        assert_eq!(
            Record::parse(nsid::POST, json),
            Record::Other(Cow::Borrowed(json))
        );
    }

    #[test]
    fn unknown_collection_is_kept_as_json() {
        let json = r#"{"$type":"fm.teal.alpha.feed.play","trackName":"x"}"#;
        assert_eq!(
            Record::parse("fm.teal.alpha.feed.play", json),
            Record::Other(Cow::Borrowed(json))
        );
    }

    #[test]
    fn legacy_blob_shape_gives_cid() {
        let json = r#"{"avatar":{"cid":"bafyold","mimeType":"image/png"},"banner":{"$type":"blob","ref":{"$link":"bafynew"}}}"#;
        let Record::Profile(p) = Record::parse(nsid::PROFILE, json) else {
            panic!()
        };
        assert_eq!(p.avatar.as_ref().and_then(Blob::cid), Some("bafyold"));
        assert_eq!(p.banner.as_ref().and_then(Blob::cid), Some("bafynew"));
    }

    #[test]
    fn typed_records_round_trip_through_json() {
        let json = r#"{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:x/app.bsky.feed.post/1","cid":"bafy"},"createdAt":"2026-01-01T00:00:00.000Z"}"#;
        let r = Record::parse(nsid::LIKE, json);
        let again = r.to_json();
        assert_eq!(Record::parse(nsid::LIKE, &again), r);
    }
}
