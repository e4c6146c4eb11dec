//! axe-core (vendored, `tests/vendor/axe-core`) over every page a college's people meet,
//! in kk, ru and en, as a 320 px phone draws them: the WCAG 2.0–2.2 A and AA rules
//! (target size among them) and axe's best practices. Any finding fails, whatever its
//! impact, and so does a page that scrolls sideways at 320 px. The walk is each journey
//! (student, teacher with the projector, curator, admin) in each language; its
//! screenshots are kept as `target/screenshots/walk-LANG-PAGE.png`.

mod common;

use common::{College, PASSWORD, TEACHER_A};
use kasip_tests::webdriver::Browser;
use serde_json::json;

const LANGUAGES: [&str; 3] = ["kk", "ru", "en"];

/// Every run's findings, kept until all pages are walked so one failure shows them all.
#[derive(Default)]
struct Audit {
    runs: usize,
    findings: Vec<String>,
    sideways: Vec<String>,
}

impl Audit {
    /// axe and the 320 px reflow check over the page the browser shows now.
    fn page(&mut self, browser: &Browser, name: &str, lang: &str) {
        self.runs += 1;
        for violation in browser.axe() {
            self.findings.push(format!("{name} [{lang}]: {violation}"));
        }
        let widths = browser.execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
        );
        if widths[0].as_i64() > widths[1].as_i64() {
            self.sideways.push(format!("{name} [{lang}]: {widths}"));
        }
        // Every page of the walk, as a phone shows it, among the test outputs.
        let file = format!("walk-{lang}-{}", name.replace(' ', "-"));
        browser.screenshot(&kasip_tests::screenshot_path(&file));
    }
}

fn sign_in(browser: &Browser, college: &College, login: &str, lang: &str) {
    browser.goto(&college.url(&format!("/login?lang={lang}")));
    browser.type_into("input[name=login]", login);
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("form[action='/login'] button");
    browser.wait_for("return location.pathname === '/teacher'", "the sign-in");
}

/// Submits the slips form shown and waits for its slips.
fn issue_slips(browser: &Browser) {
    browser.click("form[action='/staff/binding-slips'] button");
    browser.wait_for(
        "return document.querySelector('.slip') !== null",
        "the slips",
    );
}

fn sign_out(browser: &Browser, college: &College) {
    browser.goto(&college.url("/teacher"));
    browser.execute("document.querySelector('form[action=\"/logout\"]').submit()");
    browser.wait_for(
        "return location.pathname !== '/teacher' && document.readyState === 'complete'",
        "the sign-out",
    );
}

#[test]
fn every_page_in_every_language_passes_axe_and_reflows_at_320_px() {
    let college = College::new(3);
    college.add_curator("curator1", "ПО-21");
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let mut audit = Audit::default();
    let lesson = college.lesson_a;
    let group = kasip_tests::url_encode("ПО-21");
    let known = college.group_a[0].clone();
    for (index, lang) in LANGUAGES.into_iter().enumerate() {
        // A phone of its own per language: one phone checks in one student per lesson.
        let browser = Browser::start();
        browser.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 320, "height": 720, "deviceScaleFactor": 2, "mobile": true}),
        );
        let visit = |audit: &mut Audit, name: &str, path: &str| {
            let separator = if path.contains('?') { '&' } else { '?' };
            browser.goto(&college.url(&format!("{path}{separator}lang={lang}")));
            audit.page(&browser, name, lang);
        };

        // A student's phone: linking, the check-in and its confirmation, their month.
        visit(&mut audit, "bind form", "/bind");
        let student = &college.group_a[index];
        let code = college.issue_code(student);
        browser.type_into("input[name=iin]", student);
        browser.type_into("input[name=code]", &code);
        browser.click("form[action='/bind'] button");
        browser.wait_for(
            "return document.querySelector('a[href=\"/pass\"]') !== null",
            "the binding",
        );
        audit.page(&browser, "bound", lang);
        visit(&mut audit, "pass", "/pass");
        browser.goto(&college.shown_url(&teacher, lesson));
        browser.wait_for(
            "return document.getElementById('confirmation') !== null",
            "the check-in's confirmation",
        );
        audit.page(&browser, "confirmation", lang);
        visit(&mut audit, "my attendance", "/me");
        visit(&mut audit, "typed code", "/c");
        visit(&mut audit, "refused check-in", "/c/not-a-token");
        visit(&mut audit, "no such page", "/no-such-page");

        // The teacher: today's lessons, the roster, the projector, the history.
        visit(&mut audit, "sign-in", "/login");
        sign_in(&browser, &college, TEACHER_A, lang);
        audit.page(&browser, "teacher", lang);
        visit(&mut audit, "home", "/");
        visit(&mut audit, "roster", &format!("/teacher/lessons/{lesson}"));
        visit(&mut audit, "projector", &format!("/display/{lesson}"));
        visit(&mut audit, "group history", "/teacher/history");
        visit(
            &mut audit,
            "student history",
            &format!("/teacher/history/student?iin={known}"),
        );
        sign_out(&browser, &college);

        // The curator: their group's history and its phone-linking slips.
        sign_in(&browser, &college, "curator1", lang);
        audit.page(&browser, "curator", lang);
        visit(&mut audit, "curator history", "/teacher/history");
        visit(&mut audit, "slips form", "/staff/binding-slips");
        issue_slips(&browser);
        audit.page(&browser, "slips", lang);
        sign_out(&browser, &college);

        // The admin: the dashboard and what it leads to, slips for any group, the month close.
        sign_in(&browser, &college, "admin", lang);
        visit(&mut audit, "dashboard", "/admin?month=2026-11");
        visit(
            &mut audit,
            "search",
            "/admin/search?month=2026-11&q=%D0%A1%D1%82",
        );
        visit(
            &mut audit,
            "group",
            &format!("/admin/group?month=2026-11&code={group}"),
        );
        visit(
            &mut audit,
            "student",
            &format!("/admin/student?month=2026-11&iin={known}"),
        );
        visit(&mut audit, "admin slips form", "/staff/binding-slips");
        issue_slips(&browser);
        audit.page(&browser, "admin slips", lang);
        visit(
            &mut audit,
            "month close",
            "/admin/month-close?month=2026-11",
        );
        if index == 0 {
            // Closed once; the other languages see the closed month and its reports.
            browser.type_into("textarea[name=reason], input[name=reason]", "Тест");
            browser.click("form[action='/admin/month-close'] button");
            browser.wait_for(
                "return document.querySelector('a[href$=\"/html\"]') !== null",
                "the month close",
            );
            audit.page(&browser, "month closed", lang);
        }
        visit(
            &mut audit,
            "month report",
            "/admin/month-close/2026-11/html",
        );
        sign_out(&browser, &college);
    }
    assert_eq!(audit.runs, 3 * 27 + 1, "page runs");
    assert!(
        audit.findings.is_empty() && audit.sideways.is_empty(),
        "in {} page runs, axe found:\n{}\nscrolls sideways at 320 px:\n{}",
        audit.runs,
        audit.findings.join("\n"),
        audit.sideways.join("\n"),
    );
}

/// The audit can fail: a dropdown without a name and two tiny buttons side by side,
/// added to a page that passes, are found with the impact the issue names.
#[test]
fn axe_finds_an_unnamed_dropdown_and_targets_too_small_to_tap() {
    let college = College::new(1);
    let browser = Browser::start();
    browser.goto(&college.url("/login?lang=en"));
    let clean = browser.axe();
    assert!(clean.is_empty(), "{clean:?}");
    // Styled through the CSSOM: the page's CSP refuses style attributes.
    browser.execute(
        "const main = document.querySelector('main');
         main.insertAdjacentHTML('beforeend',
           '<select><option>a</option></select><p id=tiny><button>x</button><button>y</button></p>');
         for (const button of document.querySelectorAll('#tiny button')) {
           Object.assign(button.style, {width: '10px', height: '10px', minWidth: '0',
             minHeight: '0', padding: '0', margin: '0', fontSize: '6px'});
         }",
    );
    let found = browser.axe();
    let impact = |id: &str| {
        found
            .iter()
            .find(|violation| violation.id == id)
            .and_then(|violation| violation.impact.clone())
    };
    assert_eq!(
        impact("select-name").as_deref(),
        Some("critical"),
        "{found:?}"
    );
    assert_eq!(
        impact("target-size").as_deref(),
        Some("serious"),
        "{found:?}"
    );
    assert!(
        found.iter().all(|violation| violation.blocks()),
        "{found:?}"
    );
}
