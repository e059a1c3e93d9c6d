//! Pagination, one for both forges: `Link: <…>; rel="next"`, else GitLab's
//! `X-Next-Page` on the current URL; at most [`MAX_PAGES`] pages per
//! listing. A listing cut there is logged (a warning naming the endpoint)
//! and counted in `ci_exporter_forge_page_limit_reached_total`.

use super::client::{Adapter, Answer, Body, FetchError, ForgeClient, MAX_JSON_BYTES};
use crate::store::{StoreError, SyncState};
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde::de::DeserializeOwned;

/// Pages read of one listing at most.
pub(crate) const MAX_PAGES: usize = 10_000;

/// One page of a listing.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub items: T,
    pub etag: Option<String>,
    /// The URL this page came from.
    pub url: String,
}

/// The pages of one listing, read one at a time (so a caller can stop early).
pub(crate) struct Pages<'c, A> {
    client: &'c ForgeClient<A>,
    endpoint: &'static str,
    next: Option<String>,
    etag: Option<String>,
    read: usize,
    /// Whether the listing was cut at the page limit.
    cut: bool,
}

impl<A: Adapter> ForgeClient<A> {
    /// The pages of the listing at `url`; the first is conditional on `etag`.
    pub(crate) fn pages(
        &self,
        endpoint: &'static str,
        url: String,
        etag: Option<String>,
    ) -> Pages<'_, A> {
        Pages {
            client: self,
            endpoint,
            next: Some(url),
            etag,
            read: 0,
            cut: false,
        }
    }

    /// Every item of a listing; `pick` takes the list out of each page.
    pub(crate) async fn all<W: DeserializeOwned, T>(
        &self,
        endpoint: &'static str,
        url: String,
        pick: impl Fn(W) -> Vec<T>,
    ) -> Result<Vec<T>, FetchError> {
        let mut pages = self.pages(endpoint, url, None);
        let mut out = Vec::new();
        while let Some(page) = pages.next_json::<W>().await? {
            out.extend(pick(page.items));
        }
        Ok(out)
    }
}

impl<A: Adapter> Pages<'_, A> {
    /// The next page's body (`Ok(None)`: no more pages, a `304` on the first
    /// page, or the page limit reached).
    pub(crate) async fn next_body(&mut self) -> Result<Option<Page<Body>>, FetchError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if self.read >= MAX_PAGES {
            tracing::warn!(
                forge = self.client.forge(),
                endpoint = self.endpoint,
                pages = self.read,
                next = url,
                "listing cut at the page limit; the rest is not read"
            );
            self.client.count_page_limit(self.endpoint);
            self.cut = true;
            return Ok(None);
        }
        self.read += 1;
        let etag = self.etag.take();
        let body = match self
            .client
            .get(self.endpoint, &url, etag.as_deref(), MAX_JSON_BYTES)
            .await?
        {
            Answer::NotModified => return Ok(None),
            Answer::Ok(body) => body,
        };
        self.next = next_page(&body.headers, &url);
        Ok(Some(Page {
            etag: super::client::etag(&body.headers),
            items: body,
            url,
        }))
    }

    /// The next page, decoded.
    pub(crate) async fn next_json<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Page<T>>, FetchError> {
        let Some(page) = self.next_body().await? else {
            return Ok(None);
        };
        Ok(Some(Page {
            items: self.client.decode(self.endpoint, &page.url, &page.items)?,
            etag: page.etag,
            url: page.url,
        }))
    }

    /// Whether the listing was cut at the page limit: its first page's ETag
    /// must not be kept, or a later `304` would hide the unread rest.
    pub(crate) fn cut(&self) -> bool {
        self.cut
    }

    /// Whether another page follows the last one read.
    pub(crate) fn has_next(&self) -> bool {
        self.next.is_some()
    }
}

/// A list of names (an owner's repositories, a group's projects) kept in
/// the store with the ETag of the listing it came from, as the sync state
/// `(scope, kind)` of the client's forge: the names as JSON in its cursor, no success time
/// (it is not a repository's sync, so it stays out of
/// `ci_exporter_last_sync_timestamp_seconds`).
///
/// `open` starts the listing conditional on the stored ETag and reads its
/// first page. None (a `304`) answers the stored list; else every page is
/// read, `name` picks each item's name (None: left out), and the list is
/// stored with the first page's ETag, unless the listing was cut at the page
/// limit (it is then read again next time).
pub(crate) async fn cached_names<'c, A, W, E, F>(
    ctx: &super::context::Context,
    (scope, kind): (&str, &'static str),
    open: impl FnOnce(Option<String>) -> F,
    name: impl Fn(W) -> Option<String>,
) -> Result<Vec<String>, E>
where
    A: Adapter + 'c,
    W: DeserializeOwned,
    E: From<FetchError> + From<StoreError>,
    F: Future<Output = Result<(Pages<'c, A>, Option<Page<Vec<W>>>), FetchError>>,
{
    let state = ctx.sync_state(A::FORGE, scope, kind).await?;
    let (mut pages, first) = open(state.etag).await?;
    let Some(first) = first else {
        return Ok(
            serde_json::from_str(state.cursor.as_deref().unwrap_or("[]")).unwrap_or_default(),
        );
    };
    let mut items = first.items;
    while let Some(page) = pages.next_json::<Vec<W>>().await? {
        items.extend(page.items);
    }
    let names: Vec<String> = items.into_iter().filter_map(name).collect();
    let state = SyncState {
        cursor: Some(serde_json::to_string(&names).unwrap_or_default()),
        etag: first.etag.filter(|_| !pages.cut()),
        last_success: None,
    };
    ctx.set_sync_state(A::FORGE, scope, kind, state).await?;
    Ok(names)
}

/// The next page: `Link: <...>; rel="next"` (both forges; GitLab's keyset
/// and offset pagination), else `X-Next-Page` (GitLab) on the current URL.
pub(crate) fn next_page(headers: &HeaderMap, current: &str) -> Option<String> {
    if let Some(target) = headers
        .get(LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(super::next_link)
    {
        return Some(target);
    }
    let next = headers.get("x-next-page")?.to_str().ok()?.trim();
    if next.is_empty() {
        return None;
    }
    let current = Url::parse(current).ok()?;
    let mut url = current.clone();
    let pairs: Vec<(String, String)> = current
        .query_pairs()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("page", next);
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn pagination_follows_link_then_x_next_page() {
        let cur = "https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=1";
        let mut h = HeaderMap::new();
        h.insert("x-next-page", HeaderValue::from_static("2"));
        assert_eq!(
            next_page(&h, cur).unwrap(),
            "https://g/api/v4/projects/a%2Fb/pipelines?per_page=100&page=2"
        );
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://g/x?cursor=abc>; rel=\"next\", <https://g/x?p=1>; rel=\"first\"",
            ),
        );
        assert_eq!(next_page(&h, cur).unwrap(), "https://g/x?cursor=abc");
        assert_eq!(next_page(&HeaderMap::new(), cur), None);
    }
}
