//! The reader's language, as a browser meets it: a `?lang=` choice is kept (a cookie) for
//! the next pages, switching language on a page keeps the page (its other parameters),
//! and a page missing a parameter answers in the reader's language.

mod common;

use common::College;

#[test]
fn a_chosen_language_is_kept_and_switching_it_keeps_the_page() {
    let college = College::new(3);
    let admin = college.teacher("admin");
    let iin = college.group_a[0].clone();

    let response = admin
        .get(college.url(&format!("/admin/student?iin={iin}&lang=kk")))
        .send()
        .expect("student page");
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok().map(str::to_owned))
        .collect();
    assert!(
        cookies.iter().any(|cookie| cookie.starts_with("lang=kk;")),
        "{cookies:?}"
    );
    let page = response.text().expect("body");
    assert!(page.starts_with("<!doctype html><html lang=\"kk\""));
    // The footer's links switch the language of this same student's page.
    for other in ["ru", "en"] {
        assert!(
            page.contains(&format!("href=\"?iin={iin}&amp;lang={other}\"")),
            "no {other} link keeping the student: {page}"
        );
    }
    let russian = admin
        .get(college.url(&format!("/admin/student?iin={iin}&lang=ru")))
        .send()
        .expect("student page");
    assert_eq!(russian.status(), 200);
    let russian = russian.text().expect("body");
    assert!(russian.starts_with("<!doctype html><html lang=\"ru\""));
    assert!(russian.contains(&iin));

    // The next page, without ?lang=, is still in Russian (the client asks for English).
    let dashboard = admin
        .get(college.url("/admin"))
        .header("accept-language", "en")
        .send()
        .and_then(|response| response.text())
        .expect("dashboard");
    assert!(dashboard.starts_with("<!doctype html><html lang=\"ru\""));

    // The group page keeps its group the same way (a percent-encoded code).
    let group = admin
        .get(college.url("/admin/group?code=%D0%9F%D0%9E-21&lang=en"))
        .send()
        .and_then(|response| response.text())
        .expect("group page");
    assert!(
        group.contains("href=\"?code=%D0%9F%D0%9E-21&amp;lang=kk\""),
        "{group}"
    );

    // An address missing its parameter: a page in the reader's language (the last one
    // chosen: English, on the group page).
    let missing = admin
        .get(college.url("/admin/student"))
        .send()
        .expect("student page");
    assert_eq!(missing.status(), 400);
    let missing = missing.text().expect("body");
    assert!(
        missing.starts_with("<!doctype html><html lang=\"en\""),
        "{missing}"
    );
    assert!(missing.contains("missing something"), "{missing}");
    assert!(!missing.to_lowercase().contains("deserialize"), "{missing}");

    // Hostile query text is escaped where the links repeat it.
    let hostile = admin
        .get(college.url(&format!(
            "/admin/student?iin={iin}&x=%22%3E%3Cscript%3E&y=\"><b>&lang=en"
        )))
        .send()
        .and_then(|response| response.text())
        .expect("student page");
    assert!(!hostile.contains("\"><b>"), "{hostile}");
}
