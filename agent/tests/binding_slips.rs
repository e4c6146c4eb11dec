//! Phone-linking slips: a curator issues codes for their own group (and only theirs) in
//! one go, as a printable page of slips with each student's name, code, expiry and a QR
//! of the binding address; each slip's code links that student's phone.

mod common;

use common::{College, TEACHER_A};

fn slip_codes(page: &str) -> Vec<(String, String)> {
    // (name, code) per slip, in page order.
    page.split("<li class=slip>")
        .skip(1)
        .map(|slip| {
            let name = slip
                .split("<b>")
                .nth(1)
                .and_then(|rest| rest.split("</b>").next())
                .unwrap_or_default()
                .to_owned();
            let code = slip
                .split("<b class=code>")
                .nth(1)
                .and_then(|rest| rest.split("</b>").next())
                .unwrap_or_default()
                .to_owned();
            (name, code)
        })
        .collect()
}

#[test]
fn a_curator_prints_slips_for_their_group_and_each_code_links_its_student() {
    let college = College::new(3);
    college.add_curator("curator1", "ПО-21");
    let curator = college.teacher("curator1");
    let teacher_page = curator
        .get(college.url("/teacher?lang=en"))
        .send()
        .and_then(|response| response.text())
        .expect("teacher page");
    assert!(
        teacher_page.contains("href=\"/staff/binding-slips\""),
        "{teacher_page}"
    );
    let form = curator
        .get(college.url("/staff/binding-slips?lang=en"))
        .send()
        .and_then(|response| response.text())
        .expect("form");
    assert!(form.contains("<option>ПО-21</option>"), "{form}");
    assert!(
        !form.contains("<option>ПО-22</option>"),
        "another curator's group: {form}"
    );

    let csrf = kasip_tests::csrf_of(&form);
    let issue = |group: &str| {
        curator
            .post(college.url("/staff/binding-slips?lang=en"))
            .form(&[("csrf", csrf.as_str()), ("group", group)])
            .send()
            .expect("issue")
    };
    let refused = issue("ПО-22");
    assert_eq!(refused.status(), 403);
    let answer = issue("ПО-21");
    assert_eq!(answer.status(), 200);
    let page = answer.text().expect("slips");
    let slips = slip_codes(&page);
    assert_eq!(slips.len(), college.group_a.len(), "{page}");
    assert_eq!(
        page.matches("<svg").count(),
        slips.len(),
        "a QR on every slip"
    );
    assert!(
        page.contains(&format!("{}/bind", college.server.url)),
        "{page}"
    );
    assert_eq!(
        page.matches("Valid until 2026-11-24 ").count(),
        slips.len(),
        "{page}"
    );
    let issued_by_curator = college.count(
        "SELECT COUNT(*) FROM binding_codes WHERE issued_by = 'curator1' AND used_at IS NULL",
    );
    assert_eq!(issued_by_curator, slips.len() as i64);

    // The first slip's code links its student's phone.
    let (name, code) = &slips[0];
    let iin = college
        .group_a
        .iter()
        .find(|iin| college.student_name(iin) == *name)
        .expect("the slip's student")
        .clone();
    let phone = college.phone();
    let bound = college.post_bind(&phone, &iin, code, None);
    assert_eq!(bound.status(), 200, "{}", bound.text().unwrap_or_default());

    // A teacher issues no codes.
    let teacher = college.teacher(TEACHER_A);
    let status = teacher
        .get(college.url("/staff/binding-slips"))
        .send()
        .expect("slips")
        .status();
    assert_eq!(status, 403);
}

/// One student's code, as one slip: from the admin's IIN form on today's lessons, and
/// from the slips page for a curator's own student only.
#[test]
fn one_students_code_is_a_slip_with_name_group_and_expiry() {
    let college = College::new(3);
    college.add_curator("curator1", "ПО-21");
    let admin = college.teacher("admin");
    let csrf = college.csrf(&admin);
    let student = &college.group_a[1];
    let answer = admin
        .post(college.url("/admin/binding-codes?lang=en"))
        .form(&[("csrf", csrf.as_str()), ("iin", student.as_str())])
        .send()
        .expect("issue");
    assert_eq!(answer.status(), 200);
    let page = answer.text().expect("slip");
    let slips = slip_codes(&page);
    assert_eq!(slips.len(), 1, "{page}");
    let name = college.student_name(student);
    assert_eq!(slips[0].0, name);
    assert!(page.contains(&format!("<b>{name}</b> · ПО-21")), "{page}");
    assert!(page.contains("Valid until 2026-11-24 "), "{page}");
    let bound = college.post_bind(&college.phone(), student, &slips[0].1, None);
    assert_eq!(bound.status(), 200, "the slip's code links the phone");

    // A curator: their own group's student, not another's; refusals change nothing.
    let curator = college.teacher("curator1");
    let form = curator
        .get(college.url("/staff/binding-slips?lang=en"))
        .send()
        .and_then(|response| response.text())
        .expect("form");
    let csrf = kasip_tests::csrf_of(&form);
    let issue = |iin: &str| {
        let response = curator
            .post(college.url("/staff/binding-slips?lang=en"))
            .form(&[("csrf", csrf.as_str()), ("iin", iin)])
            .send()
            .expect("issue");
        (response.status().as_u16(), response.text().expect("body"))
    };
    let codes = || college.count("SELECT COUNT(*) FROM binding_codes");
    let before = codes();
    assert_eq!(issue(&college.group_b[0]).0, 403, "another group's student");
    assert_eq!(issue("12345").0, 400, "not an IIN");
    let nobody = &common::student_iins(1, 7000)[0];
    assert_eq!(issue(nobody).0, 404, "a valid IIN of no student");
    assert_eq!(codes(), before, "refusals issue nothing");
    let (status, page) = issue(&college.group_a[0]);
    assert_eq!(status, 200, "{page}");
    assert_eq!(slip_codes(&page).len(), 1, "{page}");
}
