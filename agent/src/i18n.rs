//! The one catalog of user-facing web text, in Kazakh, Russian and English.
//!
//! A plain table rather than Fluent: our strings have no plural or gender rules yet, and a
//! table checked by a test (every key, every language, no blanks) is enough. Move to
//! `fluent-bundle` when a message needs plural forms.

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Kk,
    Ru,
    En,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Kk, Lang::Ru, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Lang::Kk => "kk",
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "kk" | "kz" => Some(Lang::Kk),
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// An explicit `?lang=` choice wins; then the browser's Accept-Language by weight;
    /// then Russian, the language most college staff and students read.
    pub fn negotiate(query_lang: Option<&str>, accept_language: Option<&str>) -> Self {
        if let Some(lang) = query_lang.and_then(Self::from_code) {
            return lang;
        }
        let mut best: Option<(Lang, f32)> = None;
        for entry in accept_language.unwrap_or("").split(',') {
            let mut parts = entry.split(';');
            let Some(lang) = parts.next().and_then(Self::from_code) else {
                continue;
            };
            let weight = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .and_then(|weight| weight.parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(_, best_weight)| weight > best_weight) {
                best = Some((lang, weight));
            }
        }
        best.map_or(Lang::Ru, |(lang, _)| lang)
    }
}

/// Catalog rows: key, Kazakh, Russian, English.
const CATALOG: &[(&str, &str, &str, &str)] = &[
    (
        "agent.title",
        "KasipTech колледж агенті",
        "Агент колледжа KasipTech",
        "KasipTech college agent",
    ),
    (
        "agent.running",
        "Агент жұмыс істеп тұр.",
        "Агент работает.",
        "The agent is running.",
    ),
    ("status.students", "Студенттер", "Студенты", "Students"),
    (
        "status.beneficiaries",
        "Грант иегерлері",
        "Бюджетники",
        "Beneficiaries",
    ),
    ("status.groups", "Топтар", "Группы", "Groups"),
    ("status.teachers", "Оқытушылар", "Преподаватели", "Teachers"),
    (
        "status.lessons_today",
        "Бүгінгі сабақтар",
        "Занятия сегодня",
        "Lessons today",
    ),
    ("status.sites", "Ғимараттар", "Корпуса", "Sites"),
    ("language", "Тіл", "Язык", "Language"),
    ("error.title", "Қате", "Ошибка", "Error"),
    (
        "error.storage_unavailable",
        "Агент дискісі толы немесе жазуға жабық: белгі САҚТАЛМАДЫ. IT бөліміне хабарлаңыз; орын босағанда агент өзі қайта жұмыс істейді.",
        "Диск агента заполнен или закрыт для записи: отметка НЕ сохранена. Сообщите в IT; когда место освободится, агент продолжит работу сам.",
        "The agent's disk is full or read-only: the mark was NOT stored. Tell IT; the agent resumes by itself once there is space.",
    ),
    (
        "error.too_large",
        "Сұрау тым үлкен: ештеңе сақталмады.",
        "Запрос слишком большой: ничего не сохранено.",
        "The request is too large: nothing was stored.",
    ),
    (
        "error.too_slow",
        "Сұрау тым баяу жіберілді: ештеңе сақталмады. Қайталаңыз.",
        "Запрос передавался слишком медленно: ничего не сохранено. Повторите.",
        "The request arrived too slowly: nothing was stored. Try again.",
    ),
    (
        "error.not_found",
        "Мұндай бет жоқ.",
        "Такой страницы нет.",
        "There is no such page.",
    ),
    (
        "error.unavailable",
        "Агент қазір сұрауды орындай алмайды. Бір минуттан кейін қайталаңыз.",
        "Агент сейчас не может выполнить запрос. Повторите через минуту.",
        "The agent cannot complete this right now. Try again in a minute.",
    ),
    (
        "bind.title",
        "Телефонды байланыстыру",
        "Привязка телефона",
        "Link this phone",
    ),
    (
        "bind.iin",
        "ЖСН (12 сан)",
        "ИИН (12 цифр)",
        "IIN (12 digits)",
    ),
    (
        "bind.code",
        "Кураторден алған бір реттік код",
        "Одноразовый код от куратора",
        "One-time code from your curator",
    ),
    ("bind.submit", "Байланыстыру", "Привязать", "Link"),
    (
        "bind.hint",
        "Телефон бір рет байланыстырылады. Жаңа телефон ескісін ажыратады.",
        "Телефон привязывается один раз. Новый телефон отключает старый.",
        "A phone is linked once. Linking a new phone unlinks the old one.",
    ),
    (
        "bind.locked",
        "Қате әрекеттер тым көп. Кураторден жаңа код сұраңыз.",
        "Слишком много неверных попыток. Попросите у куратора новый код.",
        "Too many wrong attempts. Ask your curator for a new code.",
    ),
    (
        "bind.bad_iin",
        "ЖСН дұрыс емес: 12 санды тексеріңіз.",
        "Неверный ИИН: проверьте 12 цифр.",
        "That IIN is not valid: check the 12 digits.",
    ),
    (
        "bind.wrong_code",
        "ЖСН немесе код сәйкес келмейді, не код мерзімі өтіп кетті.",
        "ИИН и код не совпадают, или срок кода истёк.",
        "The IIN and code do not match, or the code has expired.",
    ),
    (
        "bind.done",
        "Телефон байланыстырылды. Енді сыныптағы QR-кодты сканерлеңіз.",
        "Телефон привязан. Теперь сканируйте QR-код в аудитории.",
        "This phone is linked. Now scan the classroom QR code.",
    ),
    (
        "checkin.title",
        "Сабаққа белгілену",
        "Отметка на занятии",
        "Check-in",
    ),
    (
        "checkin.sending",
        "Белгі жіберілуде…",
        "Отправляем отметку…",
        "Sending your check-in…",
    ),
    ("checkin.submit", "Белгілену", "Отметиться", "Check in"),
    (
        "checkin.refused",
        "Белгі қабылданбады",
        "Отметка не принята",
        "Check-in refused",
    ),
    (
        "checkin.present",
        "Сіз белгілендіңіз",
        "Вы отмечены",
        "You are checked in",
    ),
    (
        "checkin.late",
        "Сіз белгілендіңіз (кешігу)",
        "Вы отмечены (опоздание)",
        "You are checked in (late)",
    ),
    (
        "checkin.already",
        "Бұл сабаққа бұрын белгіленгенсіз.",
        "Вы уже отметились на этом занятии.",
        "You had already checked in to this lesson.",
    ),
    (
        "typed.label",
        "Экрандағы 6 таңбалы код",
        "6-значный код с экрана",
        "6-character code from the screen",
    ),
    (
        "reject.malformed_token",
        "Бұл сабақ коды емес. Экрандағы QR-кодты сканерлеңіз.",
        "Это не код занятия. Отсканируйте QR-код на экране.",
        "This is not a classroom code. Scan the QR code on the screen.",
    ),
    (
        "reject.forged_token",
        "Код жарамсыз: оны колледж агенті жасамаған.",
        "Код недействителен: он создан не агентом колледжа.",
        "This code is not valid: it was not made by the college's agent.",
    ),
    (
        "reject.stale_token",
        "Кодтың мерзімі өтті. Экрандағы қазіргі кодты сканерлеңіз.",
        "Код устарел. Отсканируйте текущий код на экране.",
        "This code has expired. Scan the code on the screen now.",
    ),
    (
        "reject.lesson_not_open",
        "Бұл сабақ ашық емес.",
        "Это занятие не открыто.",
        "This lesson is not open.",
    ),
    (
        "reject.not_in_group",
        "Сіз бұл сабақтың тобында емессіз.",
        "Вы не в группе этого занятия.",
        "You are not in this lesson's group.",
    ),
    (
        "reject.device_not_bound",
        "Бұл телефон студентке байланыстырылмаған.",
        "Этот телефон не привязан к студенту.",
        "This phone is not linked to a student.",
    ),
    (
        "reject.device_used_for_another_student",
        "Бұл телефонмен осы сабаққа басқа студент белгіленген.",
        "С этого телефона на занятии уже отметился другой студент.",
        "Another student has already checked in to this lesson from this phone.",
    ),
    (
        "reject.student_inactive",
        "Сіздің мәртебеңіз белгілеуге рұқсат бермейді (шығарылған немесе демалыста).",
        "Ваш статус не позволяет отмечаться (отчислены или в отпуске).",
        "Your status does not allow check-in (expelled or on leave).",
    ),
    (
        "reject.typed_code",
        "Код табылмады немесе мерзімі өтті.",
        "Код не найден или устарел.",
        "That code was not found or has expired.",
    ),
    (
        "staff.sign_in_first",
        "Алдымен жүйеге кіріңіз.",
        "Сначала войдите.",
        "Sign in first.",
    ),
    (
        "staff.csrf",
        "Форманың мерзімі өтті. Бетті жаңартып, қайталаңыз.",
        "Форма устарела. Обновите страницу и повторите.",
        "This form has expired. Reload the page and try again.",
    ),
    (
        "staff.not_yours",
        "Бұл сізге қолжетімсіз.",
        "Это вам недоступно.",
        "You do not have access to this.",
    ),
    (
        "login.title",
        "Қызметкерлер кіруі",
        "Вход для сотрудников",
        "Staff sign-in",
    ),
    (
        "login.login",
        "Логин немесе ЖСН",
        "Логин или ИИН",
        "Login or IIN",
    ),
    ("login.password", "Құпиясөз", "Пароль", "Password"),
    ("login.submit", "Кіру", "Войти", "Sign in"),
    (
        "login.wrong",
        "Логин немесе құпиясөз қате.",
        "Неверный логин или пароль.",
        "Wrong login or password.",
    ),
    (
        "login.locked",
        "Әрекеттер тым көп. 5 минуттан кейін қайталаңыз.",
        "Слишком много попыток. Повторите через 5 минут.",
        "Too many attempts. Try again in 5 minutes.",
    ),
    (
        "teacher.title",
        "Бүгінгі сабақтар",
        "Занятия сегодня",
        "Today's lessons",
    ),
    (
        "teacher.signed_in_as",
        "Кірген",
        "Вы вошли как",
        "Signed in as",
    ),
    ("logout", "Шығу", "Выйти", "Sign out"),
    (
        "lesson.open",
        "Сабақты ашу",
        "Открыть занятие",
        "Open lesson",
    ),
    (
        "lesson.close",
        "Сабақты жабу",
        "Закрыть занятие",
        "Close lesson",
    ),
    ("lesson.display", "Экранға QR", "QR на экран", "Show QR"),
    ("lesson.closed", "Жабық", "Закрыто", "Closed"),
    ("mark.present", "Қатысты", "Присутствовал", "Present"),
    ("mark.late", "Кешікті", "Опоздал", "Late"),
    ("mark.absent", "Қатыспады", "Отсутствовал", "Absent"),
    ("mark.excused", "Себепті", "Уважительная причина", "Excused"),
    ("mark.reason", "Себебі", "Причина", "Reason"),
    ("mark.save", "Сақтау", "Сохранить", "Save"),
    (
        "mark.bad_input",
        "Студент немесе белгі дұрыс емес.",
        "Неверный студент или отметка.",
        "Unknown student or mark.",
    ),
    (
        "mark.unknown_lesson",
        "Мұндай сабақ жоқ.",
        "Такого занятия нет.",
        "There is no such lesson.",
    ),
    (
        "mark.not_held",
        "Сабақ әлі ашылмаған.",
        "Занятие ещё не открывали.",
        "This lesson has not been opened yet.",
    ),
    (
        "mark.reason_required",
        "Себебін жазыңыз.",
        "Укажите причину.",
        "Give a reason.",
    ),
    ("display.typed", "Код:", "Код:", "Code:"),
    ("admin.dashboard", "QR қамту тақтасы", "Панель QR-охвата", "QR coverage dashboard"),
    ("admin.close_month", "Айды жабу", "Закрыть месяц", "Close the month"),
    ("admin.close_reason", "Мерзімінен бұрын жабу себебі", "Причина досрочного закрытия", "Reason to close before the month ends"),
    ("admin.projection", "Ай соңына болжам", "Прогноз на конец месяца", "Projected month end"),
    ("admin.qr_share", "QR белгілер үлесі", "Доля QR-отметок", "Share of QR marks"),
    ("admin.red_flags", "Қызыл жалаушалар", "Красные флаги", "Red flags"),
    ("admin.security_events", "Соңғы қауіпсіздік оқиғалары", "Последние события безопасности", "Recent security events"),
    ("grade.current", "Ағымдағы", "Текущая", "Current"),
    ("grade.midterm", "Аралық", "Рубежная", "Midterm"),
    ("grade.exam", "Емтихан", "Экзамен", "Exam"),
    ("grade.practice", "Тәжірибе", "Практика", "Practice"),
    ("grade.credits", "Кредиттер", "Кредиты", "Credits"),
    ("grade.save", "Бағаны сақтау", "Сохранить оценку", "Save the grade"),
    ("sync.beneficiary_pull", "Тізілімнің бюджет тізімі: тізімде / өзгерді", "Список бюджетников реестра: в списке / изменено", "Registry's beneficiary list: listed / changed"),
    ("sync.title", "e-Qazyna тізіліміне жіберу", "Отправка в реестр e-Qazyna", "Sending to the e-Qazyna registry"),
    ("sync.alert", "Жіберу тоқтатылды", "Отправка остановлена", "Sending stopped"),
    ("sync.not_enrolled", "Агент тізілімге тіркелмеген: kasip-agent enroll", "Агент не зарегистрирован в реестре: kasip-agent enroll", "The agent is not enrolled with the registry: kasip-agent enroll"),
    ("sync.oldest", "ең ескі жіберілмегені", "старейшее неотправленное", "oldest unsent"),
    ("sync.last_error", "Соңғы қате (қайталанады)", "Последняя ошибка (повторяется)", "Last error (retrying)"),
    ("sync.unknown_students", "Тізілім тізімінде бар, бірақ контингентте жоқ студенттер", "Студенты из списка реестра, которых нет в контингенте", "Students on the registry's list who are not in the roster"),
    ("mark.override_reason", "Ережеден ауытқу себебі (әкімші)", "Причина исключения из правила (админ)", "Reason to override the rule (admin)"),
    ("mark.group_coverage", "Топтың QR қамтуы", "QR-охват группы", "Group QR coverage"),
    ("mark.saved", "Белгі сақталды", "Отметка сохранена", "Mark saved"),
    ("mark.below_rule_warning", "Назар аударыңыз: бұл қолмен қойылған белгі топты QR қамту ережесінен төмен түсірді.", "Внимание: эта ручная отметка опустила группу ниже правила QR-охвата.", "Warning: this manual mark took the group below the QR coverage rule."),
    ("mark.needs_override", "Бұл қолмен қойылған белгі топты QR қамту ережесінен төмен түсіреді. Оны тек себебін көрсетіп әкімші қоя алады.", "Эта ручная отметка опустит группу ниже правила QR-охвата. Поставить её может только администратор, указав причину.", "This manual mark would take the group below the QR coverage rule. Only an admin can make it, with a reason."),
    ("mark.blocked", "Бұл қолмен қойылған белгі топты QR қамту ережесінен төмен түсіреді және колледж саясаты бойынша қабылданбайды.", "Эта ручная отметка опустит группу ниже правила QR-охвата и по политике колледжа не принимается.", "This manual mark would take the group below the QR coverage rule and the college's policy refuses it."),
    (
        "admin.binding_codes",
        "Телефонды байланыстыру кодтары",
        "Коды привязки телефонов",
        "Phone binding codes",
    ),
    ("admin.issue_code", "Код беру", "Выдать код", "Issue code"),
    (
        "admin.campus_presence",
        "Кампусқа кіру (киоск)",
        "Вход в кампус (киоск)",
        "Campus entries (kiosk)",
    ),
    ("pass.title", "Студент рұқсатнамасы", "Пропуск студента", "Student pass"),
    (
        "pass.preparing",
        "Рұқсатнама дайындалуда…",
        "Готовим пропуск…",
        "Preparing your pass…",
    ),
    (
        "pass.registering",
        "Осы телефонның кілті тіркелуде…",
        "Регистрируем ключ этого телефона…",
        "Registering this phone's key…",
    ),
    (
        "pass.ready",
        "Кодты киоск камерасына көрсетіңіз. Ол бірнеше секунд сайын жаңарады; скриншот жарамайды.",
        "Покажите код камере киоска. Он обновляется каждые несколько секунд; скриншот не подойдёт.",
        "Show this code to the kiosk's camera. It changes every few seconds; a screenshot will not work.",
    ),
    (
        "pass.failed",
        "Рұқсатнаманы дайындау мүмкін болмады:",
        "Не удалось подготовить пропуск:",
        "The pass could not be prepared:",
    ),
    (
        "pass.unsupported",
        "Бұл браузер рұқсатнаманы жасай алмайды (WebCrypto/IndexedDB жоқ). Chrome, Firefox немесе Safari-дің жаңа нұсқасын ашыңыз.",
        "Этот браузер не может создать пропуск (нет WebCrypto/IndexedDB). Откройте свежий Chrome, Firefox или Safari.",
        "This browser cannot make a pass (no WebCrypto/IndexedDB). Open a recent Chrome, Firefox or Safari.",
    ),
    (
        "pass.not_bound",
        "Бұл телефон студентке байланыстырылмаған. Алдымен куратордан алған кодпен байланыстырыңыз.",
        "Этот телефон не привязан к студенту. Сначала привяжите его кодом от куратора.",
        "This phone is not linked to a student. Link it first with the code from your curator.",
    ),
    (
        "display.count",
        "Белгіленгендер:",
        "Отметились:",
        "Checked in:",
    ),
];

/// The text of `key` in `lang`. An unknown key returns the key itself, so a missing
/// translation is visible on the page rather than a blank.
pub fn text(lang: Lang, key: &'static str) -> &'static str {
    // Unknown keys are caught by the test below, which scans the web pages' sources.
    CATALOG
        .iter()
        .find(|(entry_key, ..)| *entry_key == key)
        .map_or(key, |(_, kk, ru, en)| match lang {
            Lang::Kk => kk,
            Lang::Ru => ru,
            Lang::En => en,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_is_unique_and_translated() {
        let mut keys = HashSet::new();
        for (key, kk, ru, en) in CATALOG {
            assert!(keys.insert(key), "duplicate key {key}");
            for translation in [kk, ru, en] {
                assert!(
                    !translation.trim().is_empty(),
                    "{key} has a blank translation"
                );
            }
        }
    }

    #[test]
    fn every_key_the_web_pages_use_is_in_the_catalog() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(web).expect("src/web") {
            let source = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
            for (index, _) in source.match_indices("text(lang, \"") {
                let key: String = source[index + 12..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                if !CATALOG.iter().any(|(entry_key, ..)| *entry_key == key) {
                    missing.push(key);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from the catalog: {missing:?}"
        );
    }

    #[test]
    fn negotiation() {
        assert_eq!(Lang::negotiate(Some("kk"), Some("en")), Lang::Kk);
        assert_eq!(
            Lang::negotiate(None, Some("en-US,en;q=0.9,ru;q=0.8")),
            Lang::En
        );
        assert_eq!(
            Lang::negotiate(None, Some("de;q=1,kk-KZ;q=0.5,ru;q=0.7")),
            Lang::Ru
        );
        assert_eq!(Lang::negotiate(Some("xx"), None), Lang::Ru);
        assert_eq!(Lang::negotiate(None, Some(";;;q=,")), Lang::Ru);
        assert_eq!(text(Lang::Kk, "status.groups"), "Топтар");
    }
}
