"""The demo school: a believable music school in Harare for exploring Switchboard, the
screenshots and the benchmarks, made only in an empty database.

The whole school is planned in memory first (deterministic for a seed and a day), then written in
one transaction: people and invoices go through the same `apply_*` functions as a dialog or a CSV
import; lessons are built clash-free by construction, checked with `LessonDraft.problems()` and
inserted as rows directly, because checking 1 200 lessons one by one against the database would
take several seconds.
"""

from __future__ import annotations

import calendar
import heapq
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import FailureKind, FeeSchedule
from app.domain.routing import Gateway, PaymentAsk, Router
from app.domain.routing_rules import RuleDraft
from app.domain.school import (
    Channel,
    GuardianDraft,
    GuardianLink,
    InvoiceDraft,
    InvoiceLine,
    InvoiceStatus,
    LessonDraft,
    LessonStatus,
    StudentDraft,
    TeacherDraft,
)
from app.providers.gateway import PaymentGateway
from app.providers.sandbox import SANDBOX_URL, Behaviour, behaviour_of
from app.providers.sandbox_ledger import DECLINED_METHOD, SOFT_DECLINE_SHARE, ledger_of
from app.services import Services
from app.services.demo_reconciliation import seed_reconciliation
from app.services.payments import FAILED, MAX_ATTEMPTS, SUCCEEDED, ChargeOrder
from app.services.payments import TOPIC as PAYMENTS_TOPIC
from app.services.school import (
    TOPIC_GUARDIANS,
    TOPIC_INVOICES,
    TOPIC_LESSONS,
    TOPIC_ROOMS,
    TOPIC_STUDENTS,
    TOPIC_TEACHERS,
    apply_guardian,
    apply_invoice,
    apply_student,
    apply_teacher,
    room_named,
)
from app.services.settings import put_setting
from app.store.base import Base
from app.store.integration import HealthCheckRow, RequestLogEntry
from app.store.payments import PaymentAttemptRow, PaymentMethodRow, PaymentRow
from app.store.school import Guardian, Invoice, Lesson, LessonStudent, Student, Teacher

SCHOOL_SETTINGS = (
    ("school.name", "Msasa Park Music School"),
    ("school.timezone", "Africa/Harare"),
    ("school.locale", "en_ZW"),
    ("school.currency", "USD"),
)
TIMEZONE = "Africa/Harare"
STUDENTS = 200
WEEKS = 6
INVOICE_DAYS = 14

# The time window each weekday (Monday 0 .. Saturday 5) in minutes after midnight: after school on
# weekdays, Saturday mornings.
WINDOWS = dict.fromkeys(range(5), (14 * 60, 18 * 60)) | {5: (8 * 60, 13 * 60)}
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
STEP = 15

# (name, capacity). The halls double as teaching rooms when no group is in them.
ROOMS = (
    ("Studio 1", 3),
    ("Studio 2", 3),
    ("Studio 3", 4),
    ("Studio 4", 4),
    ("Piano Room", 6),
    ("Drum Room", 4),
    ("Marimba Hall", 20),
    ("Recital Hall", 60),
)

_PIANO_ROOMS = ("Piano Room", "Studio 1", "Studio 2", "Recital Hall")
_SMALL_ROOMS = ("Studio 3", "Studio 4", "Studio 2", "Studio 1", "Recital Hall")


@dataclass(frozen=True)
class _TeacherPlan:
    first_name: str
    last_name: str
    subjects: str
    days: str
    rooms: tuple[str, ...]  # in order of preference; empty: teaches online
    timezone: str = ""


TEACHERS = (
    _TeacherPlan("Rutendo", "Chiweshe", "Piano, Theory", "Mon Tue Wed Thu Sat", _PIANO_ROOMS),
    _TeacherPlan("Nkosana", "Dube", "Piano", "Mon Tue Wed Thu Fri Sat", _PIANO_ROOMS[1:]),
    # Teaches theory online from London; the only teacher with a time zone of their own.
    _TeacherPlan(
        "Kudzai", "Chinyama", "Theory, Composition", "Mon Tue Wed Thu", (), "Europe/London"
    ),
    _TeacherPlan("Sibongile", "Ncube", "Violin, Viola", "Mon Tue Wed Fri Sat", _SMALL_ROOMS),
    _TeacherPlan("Farai", "Makoni", "Cello, Violin", "Mon Tue Thu Fri", _SMALL_ROOMS),
    _TeacherPlan("Tapiwa", "Gumbo", "Guitar", "Mon Wed Thu Sat", (*_SMALL_ROOMS[1:], "Studio 3")),
    _TeacherPlan("James", "Fletcher", "Guitar, Bass guitar", "Tue Wed Fri Sat", _SMALL_ROOMS),
    _TeacherPlan("Nomvula", "Sibanda", "Voice", "Mon Tue Wed Thu Sat", ("Studio 2", *_PIANO_ROOMS)),
    _TeacherPlan("Chiedza", "Marufu", "Marimba", "Mon Tue Thu Sat", ("Marimba Hall",)),
    _TeacherPlan(
        "Tonderai", "Chigamba", "Mbira, Marimba", "Tue Wed Fri Sat", ("Studio 4", "Marimba Hall")
    ),
    _TeacherPlan("Themba", "Khumalo", "Drums, Percussion", "Mon Tue Wed Thu Fri", ("Drum Room",)),
    _TeacherPlan("Ruth", "Campbell", "Flute, Recorder", "Mon Wed Fri Sat", _SMALL_ROOMS),
)

# How a lesson on the instrument is called, where that is not the instrument's name.
_LESSON_NAMES = {"Drums": "Drum"}

# instrument: (share of students, youngest age, teachers by index into TEACHERS)
INSTRUMENTS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "Piano": (22, 5, (0, 1)),
    "Guitar": (17, 7, (5, 6)),
    "Violin": (9, 5, (3, 4)),
    "Voice": (9, 7, (7,)),
    "Marimba": (10, 6, (8, 9)),
    "Mbira": (6, 8, (9,)),
    "Drums": (8, 7, (10,)),
    "Flute": (7, 8, (11,)),
    "Cello": (4, 7, (4,)),
    "Theory": (8, 10, (2,)),
}


@dataclass(frozen=True)
class _GroupPlan:
    title: str
    teacher: int
    room: str
    day: int
    start: int
    minutes: int
    instruments: frozenset[str]  # empty: any instrument
    ages: tuple[int, int]
    size: tuple[int, int]


GROUPS = (
    _GroupPlan(
        title="Marimba Band",
        teacher=8,
        room="Marimba Hall",
        day=5,
        start=9 * 60,
        minutes=90,
        instruments=frozenset({"Marimba", "Mbira", "Drums"}),
        ages=(9, 18),
        size=(12, 15),
    ),
    _GroupPlan(
        title="Junior Choir",
        teacher=7,
        room="Recital Hall",
        day=5,
        start=10 * 60 + 30,
        minutes=60,
        instruments=frozenset(),
        ages=(6, 11),
        size=(10, 15),
    ),
    _GroupPlan(
        title="String Ensemble",
        teacher=3,
        room="Recital Hall",
        day=4,
        start=16 * 60,
        minutes=60,
        instruments=frozenset({"Violin", "Cello", "Flute"}),
        ages=(8, 18),
        size=(8, 12),
    ),
    _GroupPlan(
        title="Music Theory Class",
        teacher=0,
        room="Recital Hall",
        day=2,
        start=15 * 60,
        minutes=60,
        instruments=frozenset({"Piano", "Violin", "Flute", "Cello", "Guitar", "Voice"}),
        ages=(10, 14),
        size=(8, 12),
    ),
    _GroupPlan(
        title="Guitar Ensemble",
        teacher=5,
        room="Marimba Hall",
        day=3,
        start=16 * 60,
        minutes=60,
        instruments=frozenset({"Guitar"}),
        ages=(10, 18),
        size=(6, 10),
    ),
)

# Prices per lesson, by length in minutes; ZWG at about 27 to the US dollar.
PRICES = {
    "USD": {30: "15.00", 45: "20.00", 60: "25.00", 0: "8.00"},
    "ZWG": {30: "405.00", 45: "540.00", 60: "675.00", 0: "216.00"},
}
GROUP_PRICE = 0  # key into PRICES for a place in a group lesson

# --- names ---------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SHONA_F = _words(
    "Rutendo Chipo Tsitsi Rudo Nyasha Ruvimbo Chiedza Fadzai Vimbai Tariro Shamiso Ratidzo "
    "Rumbidzai Tendai Kudzai Tatenda Mazvita Ropafadzo Ruvarashe Anesu Tanaka Nokutenda Munashe "
    "Tadiwa Chengetai Fungai Tafadzwa Rufaro Kundai"
)
_SHONA_M = _words(
    "Tinashe Tawanda Tapiwa Tafadzwa Takudzwa Simbarashe Tonderai Tichaona Kudakwashe Munyaradzi "
    "Takura Farai Tendai Tatenda Panashe Kundai Munashe Mufaro Nyasha Kupakwashe Tanaka Anotida "
    "Chengetai Fungai Tinotenda Tapiwanashe"
)
_NDEBELE_F = _words(
    "Thandiwe Nomvula Lindiwe Nokuthula Sibongile Busisiwe Zanele Nqobile Sindisiwe Khanyisile "
    "Nomalanga Sithembile Thandeka Siphiwe Nomsa"
)
_NDEBELE_M = _words(
    "Sipho Themba Bongani Mandla Nkosana Sibusiso Sifiso Lindani Thabani Mthabisi Sakhile Lwazi "
    "Sihle Nhlanhla Siphiwe"
)
_ENGLISH_F = _words(
    "Grace Faith Precious Memory Blessing Ruth Esther Michelle Natasha Ashley Kimberly Rachel "
    "Nicole Tanya Emma Sophie Hannah Charlotte Patience Loveness"
)
_ENGLISH_M = _words(
    "Blessing Gift Joshua Daniel Ethan Brandon Samuel David Emmanuel Tyler Joseph Peter John James "
    "Oliver Liam Michael Nathan"
)
_ELDER_F = _words(
    "Agnes Beatrice Evelyn Mavis Margaret Rosemary Tambudzai Rumbidzai Sithembile Ntombizodwa "
    "Loveness Patience Elizabeth Ellen Esnath Juliet"
)
_SURNAMES = {
    "shona": _words(
        "Moyo Chiweshe Mapfumo Marufu Chigumba Makoni Mutasa Gumbo Chinyama Zvobgo Madziva Mawere "
        "Nyamayaro Chakanyuka Musoni Maposa Shumba Mashingaidze Gwatidzo Marange Chimuka Kanengoni "
        "Zhou Hove Mlambo Chinembiri Mutambara Muzenda Nyandoro Matanda Chikwanha Chirisa "
        "Mupfumira Dzvairo Murwira Chitando Makumbe Banda Phiri Chari Mukwena Gono"
    ),
    "ndebele": _words(
        "Ncube Sibanda Dube Ndlovu Mpofu Khumalo Nkomo Tshuma Moyo Nyathi Mhlanga Mangena Nyoni "
        "Sithole Mathe Masuku Mlilo Ngwenya Gumede Mabhena"
    ),
    "english": _words(
        "Smith Taylor Evans Murray Campbell Clarke Fletcher Harris Bennett Watson Fraser Thompson"
    ),
}
_GIVEN = {
    ("shona", "F"): _SHONA_F,
    ("shona", "M"): _SHONA_M,
    ("ndebele", "F"): _NDEBELE_F,
    ("ndebele", "M"): _NDEBELE_M,
    ("english", "F"): _ENGLISH_F,
    ("english", "M"): _ENGLISH_M,
}
_LANGUAGE = {"shona": "sn", "ndebele": "nd", "english": "en"}
EMAIL_DOMAINS = ("example.org", "example.com", "example.net")
_MOBILE_PREFIXES = ("77", "78", "71", "73")

_CANCEL_PAST = ("Student unwell.", "Family away for the weekend.", "School sports day.")
_CANCEL_FUTURE = ("Teacher at an exam board meeting.", "Family travelling to Mutare.")
_STUDENT_NOTES = (
    "Preparing for the ABRSM Grade {grade} exam.",
    "Borrows a school instrument.",
    "Prefers a lesson straight after school.",
    "Collected by the school bus on Fridays.",
    "Plays in the school assembly band.",
)


@dataclass(frozen=True)
class DemoSummary:
    """What `seed_demo` wrote: record counts, invoice currencies and the lessons' first and last
    day (a Monday and a Sunday, six weeks apart)."""

    students: int
    guardians: int
    teachers: int
    rooms: int
    lessons: int
    invoices: int
    currencies: tuple[str, ...]
    first_day: date
    last_day: date
    connections: int = 0
    payments: int = 0  # the payment history at the sandbox gateways
    note: str = ""


# --- the plan ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Weekly:
    """A lesson that repeats every week at the same time; `subject` names it on invoices."""

    title: str
    subject: str
    teacher: int
    room: str | None
    day: int
    start: int
    minutes: int
    students: list[int]
    group: bool

    @property
    def end(self) -> int:
        return self.start + self.minutes


@dataclass
class _Student:
    draft: StudentDraft
    family: int
    guardians: list[tuple[int, str]]  # (guardian index, relationship); the first is primary
    age: int
    instrument: str
    minutes: int
    lesson: _Weekly | None = None
    groups: list[_Weekly] = field(default_factory=list)


@dataclass(frozen=True)
class _Occurrence:
    weekly: _Weekly
    starts_at: datetime
    ends_at: datetime
    status: LessonStatus
    notes: str


@dataclass(frozen=True)
class _Invoice:
    student: int
    guardian: int
    draft: InvoiceDraft


@dataclass
class _Plan:
    first_day: date
    last_day: date
    teachers: list[TeacherDraft]
    guardians: list[GuardianDraft]
    students: list[_Student]
    lessons: list[_Occurrence]
    invoices: list[_Invoice]


class _Contacts:
    """Unique, obviously invented phone numbers and e-mail addresses."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._phones: set[str] = set()
        self._emails: set[str] = set()

    def phone(self) -> str:
        while True:
            prefix = self._rng.choices(_MOBILE_PREFIXES, weights=(50, 15, 25, 10))[0]
            number = f"+263 {prefix} {self._rng.randint(100, 999)} {self._rng.randint(0, 9999):04d}"
            if number not in self._phones:
                self._phones.add(number)
                return number

    def email(self, first: str, last: str, domain: str | None = None) -> str:
        domain = domain or self._rng.choice(EMAIL_DOMAINS)
        base = f"{first}.{last}".lower()
        address, n = f"{base}@{domain}", 1
        while address in self._emails:
            n += 1
            address = f"{base}{n}@{domain}"
        self._emails.add(address)
        return address


class _Timetable:
    """Who and what is busy when, over one template week."""

    def __init__(self) -> None:
        self._busy: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        self.teacher_minutes: dict[tuple[int, int], int] = defaultdict(int)

    def free(self, keys: list[str], day: int, start: int, end: int) -> bool:
        return all(
            end <= s or e <= start for key in keys for s, e in self._busy.get((key, day), ())
        )

    def book(self, lesson: _Weekly, *, students_only: bool = False) -> None:
        keys = [f"s{index}" for index in lesson.students]
        if not students_only:
            keys.append(f"t{lesson.teacher}")
            if lesson.room is not None:
                keys.append(f"r{lesson.room}")
            self.teacher_minutes[lesson.teacher, lesson.day] += lesson.minutes
        for key in keys:
            self._busy[key, lesson.day].append((lesson.start, lesson.end))


def _grade(born: date, today: date) -> str:
    """Zimbabwean schools: Grade 1 in the year a child turns six, Form 1 in the year they turn
    thirteen, up to Form 6 (upper sixth)."""
    turns = today.year - born.year
    if turns <= 5:
        return "ECD B"
    if turns <= 12:
        return f"Grade {turns - 5}"
    return f"Form {min(turns, 18) - 12}"


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _month_start(day: date, months_back: int) -> date:
    month = day.month - months_back
    year = day.year + (month - 1) // 12
    return date(year, (month - 1) % 12 + 1, 1)


def _weekdays_in_month(first: date, weekday: int) -> list[date]:
    days = calendar.monthrange(first.year, first.month)[1]
    return [
        first + timedelta(d) for d in range(days) if (first + timedelta(d)).weekday() == weekday
    ]


def _price(currency: str, minutes: int) -> int:
    return Money.parse(PRICES[currency][minutes], currency).minor


def _plan_people(
    rng: random.Random, contacts: _Contacts, today: date
) -> tuple[list[GuardianDraft], list[_Student], list[str]]:
    """Families of guardians and students; returns also each family's invoice currency."""
    guardians: list[GuardianDraft] = []
    students: list[_Student] = []
    currencies: list[str] = []
    while len(students) < STUDENTS:
        family = len(currencies)
        culture = rng.choices(("shona", "ndebele", "english"), weights=(60, 25, 15))[0]
        surname = rng.choice(_SURNAMES[culture])
        currencies.append("ZWG" if rng.random() < 0.3 else "USD")

        def adult(gender: str, last: str, *, elder: bool = False, culture: str = culture) -> int:
            first = rng.choice(_ELDER_F if elder else _GIVEN[culture, gender])
            guardians.append(_plan_guardian(rng, contacts, culture, first, last, len(guardians)))
            return len(guardians) - 1

        kind = rng.choices(
            ("parents", "mother", "father", "grandmother", "aunt", "guardian"),
            weights=(50, 25, 8, 10, 4, 3),
        )[0]
        links: list[tuple[int, str]]
        if kind == "parents":
            mother = (adult("F", surname), "mother")
            father = (adult("M", surname), "father")
            links = [mother, father] if rng.random() < 0.7 else [father, mother]
        elif kind in ("mother", "father"):
            links = [(adult("F" if kind == "mother" else "M", surname), kind)]
        elif kind == "grandmother":
            last = surname if rng.random() < 0.5 else rng.choice(_SURNAMES[culture])
            links = [(adult("F", last, elder=True), "grandmother")]
            if rng.random() < 0.3:
                links.append((adult("F", rng.choice(_SURNAMES[culture])), "aunt"))
        elif kind == "aunt":
            links = [(adult("F", rng.choice(_SURNAMES[culture])), "aunt")]
        else:
            links = [(adult(rng.choice("FM"), rng.choice(_SURNAMES[culture])), "guardian")]

        children = rng.choice((2, 2, 2, 3)) if rng.random() < 0.15 else 1
        for _ in range(min(children, STUDENTS - len(students))):
            students.append(_plan_student(rng, contacts, today, culture, surname, family, links))
    return guardians, students, currencies


def _plan_guardian(
    rng: random.Random, contacts: _Contacts, culture: str, first: str, last: str, index: int
) -> GuardianDraft:
    """Nearly every guardian has a mobile number, most an e-mail address; the channel they
    prefer is one they can be reached on."""
    phone = contacts.phone() if rng.random() < 0.95 else ""
    email = contacts.email(first, last) if rng.random() < 0.8 or not phone else ""
    if email and phone:
        channel = rng.choices(list(Channel), weights=(35, 20, 45))[0]
    elif phone:
        channel = rng.choices((Channel.SMS, Channel.WHATSAPP), weights=(30, 70))[0]
    else:
        channel = Channel.EMAIL
    language = "en"
    if culture != "english" and rng.random() < 0.45:
        language = _LANGUAGE[culture]
    return GuardianDraft(
        first_name=first,
        last_name=last,
        ref=f"G-{index + 1:04d}",
        email=email,
        phone=phone,
        preferred_channel=channel,
        language=language,
    )


def _plan_student(
    rng: random.Random,
    contacts: _Contacts,
    today: date,
    culture: str,
    surname: str,
    family: int,
    links: list[tuple[int, str]],
) -> _Student:
    naming = culture if culture == "english" or rng.random() < 0.65 else "english"
    first = rng.choice(_GIVEN[naming, rng.choice("FM")])
    age = rng.choices(range(5, 19), weights=(3, 5, 7, 8, 9, 9, 9, 9, 9, 8, 7, 6, 5, 4))[0]
    born = _years_before(today, age) - timedelta(days=rng.randint(1, 364))
    phone = contacts.phone() if age >= 13 and rng.random() < (0.6 if age >= 15 else 0.3) else ""
    email = contacts.email(first, surname) if age >= 15 and rng.random() < 0.4 else ""
    while True:
        instrument = rng.choices(list(INSTRUMENTS), weights=[v[0] for v in INSTRUMENTS.values()])[0]
        if age >= INSTRUMENTS[instrument][1]:
            break
    if age <= 7:
        minutes = 30
    elif age <= 11:
        minutes = rng.choice((30, 45))
    elif age <= 14:
        minutes = rng.choices((30, 45, 60), weights=(2, 5, 3))[0]
    else:
        minutes = rng.choices((45, 60), weights=(4, 6))[0]
    grade = _grade(born, today)
    notes = ""
    if rng.random() < 0.12:
        notes = rng.choice(_STUDENT_NOTES).format(grade=min(8, max(1, (age - 5) // 2)))
    draft = StudentDraft(
        first_name=first,
        last_name=surname,
        date_of_birth=born,
        grade=grade,
        email=email,
        phone=phone,
        notes=notes,
    )
    return _Student(draft, family, links, age, instrument, minutes)


def _place(timetable: _Timetable, teacher: int, index: int, student: _Student) -> _Weekly | None:
    """The student's weekly lesson on the teacher's quietest day that has room, as early in the
    afternoon as the teacher, a room and the student are all free."""
    plan = TEACHERS[teacher]
    days = [DAY_NAMES.index(name) for name in plan.days.split()]
    days.sort(key=lambda day: timetable.teacher_minutes[teacher, day])
    for day in days:
        first, last = WINDOWS[day]
        for start in range(first, last - student.minutes + 1, STEP):
            end = start + student.minutes
            if not timetable.free([f"t{teacher}", f"s{index}"], day, start, end):
                continue
            rooms: tuple[str | None, ...] = plan.rooms or (None,)
            for room in rooms:
                if room is None or timetable.free([f"r{room}"], day, start, end):
                    name = f"{student.draft.first_name} {student.draft.last_name}"
                    kind = _LESSON_NAMES.get(student.instrument, student.instrument)
                    return _Weekly(
                        title=f"{kind} lesson — {name}",
                        subject=f"{kind} lessons",
                        teacher=teacher,
                        room=room,
                        day=day,
                        start=start,
                        minutes=student.minutes,
                        students=[index],
                        group=False,
                    )
    return None


def _plan_timetable(rng: random.Random, students: list[_Student]) -> list[_Weekly]:
    """Group lessons hold their teacher and room first; then every active student gets a weekly
    lesson; then the groups are filled with students who are free at that time."""
    timetable = _Timetable()
    bands = [
        _Weekly(
            title=group.title,
            subject=group.title,
            teacher=group.teacher,
            room=group.room,
            day=group.day,
            start=group.start,
            minutes=group.minutes,
            students=[],
            group=True,
        )
        for group in GROUPS
    ]
    for band in bands:
        timetable.book(band)

    # Longest lessons first: they are the hardest to fit.
    active = [i for i, student in enumerate(students) if student.draft.active]
    lessons: list[_Weekly] = []
    for i in sorted(active, key=lambda i: -students[i].minutes):
        student = students[i]
        teachers = sorted(
            INSTRUMENTS[student.instrument][2],
            key=lambda t: sum(timetable.teacher_minutes[t, d] for d in range(6)),
        )
        for teacher in teachers:
            lesson = _place(timetable, teacher, i, student)
            if lesson is not None:
                timetable.book(lesson)
                lessons.append(lesson)
                student.lesson = lesson
                break
        else:
            # No teacher of this instrument has a free hour: a real school has a waiting list.
            student.draft = replace(
                student.draft,
                active=False,
                notes=f"On the waiting list for a {student.instrument.lower()} teacher.",
            )

    for group, band in zip(GROUPS, bands, strict=True):
        eligible = [
            i
            for i, student in enumerate(students)
            if student.lesson is not None
            and group.ages[0] <= student.age <= group.ages[1]
            and (not group.instruments or student.instrument in group.instruments)
            and timetable.free([f"s{i}"], band.day, band.start, band.end)
        ]
        band.students = sorted(rng.sample(eligible, min(rng.randint(*group.size), len(eligible))))
        timetable.book(band, students_only=True)
        for i in band.students:
            students[i].groups.append(band)
    return bands + lessons


def _plan_lessons(
    rng: random.Random, weekly: list[_Weekly], first_day: date, now: datetime
) -> list[_Occurrence]:
    zone = ZoneInfo(TIMEZONE)
    slots = sorted(weekly, key=lambda w: (w.day, w.start, w.teacher))
    dated = [
        (lesson, first_day + timedelta(days=7 * week + lesson.day))
        for week in range(WEEKS)
        for lesson in slots
    ]
    individual = [n for n, (lesson, _) in enumerate(dated) if not lesson.group]
    cancelled = set(rng.sample(individual, min(14, len(individual))))
    occurrences = []
    for n, (lesson, day) in enumerate(dated):
        starts = datetime.combine(day, time(lesson.start // 60, lesson.start % 60), zone)
        ends = starts + timedelta(minutes=lesson.minutes)
        notes = ""
        if n in cancelled:
            status = LessonStatus.CANCELLED
            notes = rng.choice(_CANCEL_PAST if ends <= now else _CANCEL_FUTURE)
        elif ends <= now:
            status = LessonStatus.COMPLETED
        else:
            status = LessonStatus.SCHEDULED
        occurrences.append(_Occurrence(lesson, starts, ends, status, notes))
    return occurrences


def _plan_invoices(
    rng: random.Random,
    students: list[_Student],
    currencies: list[str],
    lessons: list[_Occurrence],
    today: date,
) -> list[_Invoice]:
    """Monthly tuition for last month and this month: one invoice per active student to the
    primary guardian, a line per weekly lesson with the number of lessons it has that month."""
    cancelled: dict[tuple[_Weekly, date], int] = defaultdict(int)
    for occurrence in lessons:
        if occurrence.status is LessonStatus.CANCELLED:
            cancelled[occurrence.weekly, occurrence.starts_at.date().replace(day=1)] += 1
    last_month, this_month = _month_start(today, 1), _month_start(today, 0)
    # This month's run is recent enough that its invoices are not yet due.
    issued = {last_month: last_month, this_month: max(this_month, today - timedelta(days=7))}
    late_payers = {family for family in range(len(currencies)) if rng.random() < 0.15}
    invoices: list[_Invoice] = []
    numbers: dict[int, int] = defaultdict(int)
    for month in (last_month, this_month):
        label = f"{calendar.month_name[month.month]} {month.year}"
        for index, student in enumerate(students):
            if student.lesson is None or not student.draft.active:
                continue
            currency = currencies[student.family]
            lines = [
                InvoiceLine(
                    description=f"{lesson.subject} — {label}",
                    quantity=len(_weekdays_in_month(month, lesson.day)) - cancelled[lesson, month],
                    unit_minor=_price(currency, GROUP_PRICE if lesson.group else lesson.minutes),
                )
                for lesson in (student.lesson, *student.groups)
            ]
            status = InvoiceStatus.OPEN
            if month == last_month and student.family not in late_payers:
                status = InvoiceStatus.PAID
            issued_on = issued[month]
            numbers[issued_on.year] += 1
            draft = InvoiceDraft(
                currency=currency,
                issued_on=issued_on,
                due_on=issued_on + timedelta(days=INVOICE_DAYS),
                lines=tuple(lines),
                number=f"INV-{issued_on.year}-{numbers[issued_on.year]:04d}",
                status=status,
            )
            invoices.append(_Invoice(index, student.guardians[0][0], draft))
    # A few of this month's are still waiting for the bursar's check.
    recent = [n for n, invoice in enumerate(invoices) if invoice.draft.issued_on >= this_month]
    for n in rng.sample(recent, min(4, len(recent))):
        invoices[n] = replace(
            invoices[n],
            draft=replace(
                invoices[n].draft,
                status=InvoiceStatus.DRAFT,
                notes="Waiting for the bursar to check the number of lessons.",
            ),
        )
    return invoices


def _plan_demo(today: date, now: datetime, seed: int) -> _Plan:
    """The whole demo school in memory, before anything is written."""
    rng = random.Random(seed)
    contacts = _Contacts(rng)
    teachers = [
        TeacherDraft(
            first_name=t.first_name,
            last_name=t.last_name,
            ref=f"T-{n:04d}",
            email=contacts.email(t.first_name, t.last_name, "example.org"),
            phone=contacts.phone(),
            subjects=t.subjects,
            timezone=t.timezone,
        )
        for n, t in enumerate(TEACHERS, start=1)
    ]
    guardians, students, currencies = _plan_people(rng, contacts, today)
    for student in rng.sample(students, 6):
        left = _month_start(today, rng.randint(1, 4))
        student.draft = replace(
            student.draft,
            active=False,
            notes=f"Stopped lessons in {calendar.month_name[left.month]} {left.year}.",
        )
    weekly = _plan_timetable(rng, students)
    for number, student in enumerate(students, start=1):
        student.draft = replace(student.draft, ref=f"S-{number:04d}")
    first_day = today - timedelta(days=today.weekday() + 7)
    lessons = _plan_lessons(rng, weekly, first_day, now)
    invoices = _plan_invoices(rng, students, currencies, lessons, today)
    return _Plan(
        first_day=first_day,
        last_day=first_day + timedelta(days=7 * WEEKS - 1),
        teachers=teachers,
        guardians=guardians,
        students=students,
        lessons=lessons,
        invoices=invoices,
    )


# --- writing it ----------------------------------------------------------------------------------

_SCHOOL_TABLES: tuple[tuple[str, type[Base]], ...] = (
    ("students", Student),
    ("guardians", Guardian),
    ("teachers", Teacher),
    ("lessons", Lesson),
    ("invoices", Invoice),
)


def _refuse_unless_empty(session: Session) -> None:
    counts = {
        label: session.scalar(select(func.count()).select_from(model)) or 0
        for label, model in _SCHOOL_TABLES
    }
    held = ", ".join(f"{count} {label}" for label, count in counts.items() if count)
    if held:
        raise SwitchboardError(
            f"This database already holds a school's records ({held}), and demo data must never "
            "be mixed into them; seed the demo into an empty data folder instead, for example "
            "with --data-dir."
        )


def _check_no_double_bookings(drafts: list[LessonDraft]) -> None:
    """The same rule as `lesson_clashes`, over the whole timetable at once."""
    booked: dict[tuple[str, int], list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for draft in drafts:
        if draft.status is LessonStatus.CANCELLED:
            continue
        keys = [("teacher", draft.teacher_id), *(("student", s) for s in draft.student_ids)]
        if draft.room_id is not None:
            keys.append(("room", draft.room_id))
        for key in keys:
            booked[key].append((draft.starts_at, draft.ends_at, draft.title))
    for (kind, key_id), spans in booked.items():
        spans.sort()
        for (_, ends, title), (starts, _, other) in itertools.pairwise(spans):
            if starts < ends:
                raise SwitchboardError(
                    f"The demo timetable double-books {kind} {key_id} (“{title}” and “{other}”); "
                    "nothing was written. Please report this."
                )


def _write(session: Session, plan: _Plan) -> DemoSummary:
    _refuse_unless_empty(session)
    # The school's settings go in the same transaction as its records: all or nothing.
    for key, value in SCHOOL_SETTINGS:
        put_setting(session, key, value)
    teacher_ids = [apply_teacher(session, draft).id for draft in plan.teachers]
    room_ids: dict[str, int] = {}
    for name, capacity in ROOMS:
        room = room_named(session, name, create=True)
        assert room is not None
        if room.capacity is None:
            room.capacity = capacity
        room_ids[name] = room.id
    guardian_ids = [apply_guardian(session, draft).id for draft in plan.guardians]
    student_ids = []
    for student in plan.students:
        links = tuple(
            GuardianLink(guardian_ids[g], 0, relationship, is_primary=position == 0)
            for position, (g, relationship) in enumerate(student.guardians)
        )
        draft = replace(student.draft, guardians=links)
        student_ids.append(apply_student(session, draft).id)

    drafts = [
        LessonDraft(
            title=lesson.weekly.title,
            teacher_id=teacher_ids[lesson.weekly.teacher],
            starts_at=lesson.starts_at,
            ends_at=lesson.ends_at,
            ref=f"L-{number:06d}",
            room_id=room_ids[lesson.weekly.room] if lesson.weekly.room else None,
            student_ids=tuple(student_ids[i] for i in lesson.weekly.students),
            status=lesson.status,
            online=lesson.weekly.room is None,
            notes=lesson.notes,
        )
        for number, lesson in enumerate(plan.lessons, start=1)
    ]
    for lesson_draft in drafts:
        problems = lesson_draft.problems()
        if problems:
            raise SwitchboardError(
                f"A demo lesson is not valid ({problems[0]}); please report this."
            )
    _check_no_double_bookings(drafts)
    session.add_all(
        Lesson(
            ref=draft.ref,
            title=draft.title,
            teacher_id=draft.teacher_id,
            room_id=draft.room_id,
            starts_at=draft.starts_at,
            ends_at=draft.ends_at,
            status=draft.status.value,
            online=draft.online,
            notes=draft.notes,
            student_links=[LessonStudent(student_id=s) for s in draft.student_ids],
        )
        for draft in drafts
    )
    session.flush()

    for invoice in plan.invoices:
        apply_invoice(
            session,
            replace(
                invoice.draft,
                student_id=student_ids[invoice.student],
                guardian_id=guardian_ids[invoice.guardian],
            ),
        )
    return DemoSummary(
        students=len(student_ids),
        guardians=len(guardian_ids),
        teachers=len(teacher_ids),
        rooms=len(room_ids),
        lessons=len(drafts),
        invoices=len(plan.invoices),
        currencies=tuple(sorted({invoice.draft.currency for invoice in plan.invoices})),
        first_day=plan.first_day,
        last_day=plan.last_day,
    )


# Three simulated gateways with different temperaments, so the dashboard has something to show:
# a quick and steady one, a slower and flakier mobile-money one, and one with regular outages.
# Each also has its own approval rate and fees, so the router has a real choice to make: mobile
# money is cheapest on small amounts and declines more, bank transfers are cheapest on large ones,
# cards approve the most.
SANDBOXES: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "Sandbox Cards",
        {
            "latency_ms": "90",
            "latency_p95_ms": "250",
            "error_rate": "0.01",
            "approval_rate": "0.96",
            "fee_percent": "1.9",
            "fee_fixed_minor": "30",
        },
    ),
    (
        "Sandbox EcoCash",
        {
            "latency_ms": "450",
            "latency_p95_ms": "1800",
            "error_rate": "0.06",
            "approval_rate": "0.92",
            "fee_percent": "2.2",
            "fee_fixed_minor": "0",
        },
    ),
    (
        "Sandbox Bank Transfers",
        {
            "latency_ms": "200",
            "latency_p95_ms": "600",
            "error_rate": "0.02",
            "outages": "every 20 min for 3 min",
            "approval_rate": "0.97",
            "fee_percent": "0.8",
            "fee_fixed_minor": "125",
        },
    ),
)
DEMO_KEY = "sk_sandbox_demo_key"


async def _connect_sandboxes(services: Services, now: datetime, seed: int) -> tuple[int, int, str]:
    """The demo's sandbox gateways, their past payments, and demo traffic through them; none
    (and why) when the computer has no credential store for their keys. Returns how many
    connections and payments were added."""
    status = services.secrets.status()
    if not status.available:
        return 0, 0, f"No sandbox connections were added: {status.problem}"
    records = [
        await services.connections.add("sandbox-payments", name, values, {"api_key": DEMO_KEY})
        for name, values in SANDBOXES
    ]
    await services.db.write(_history, [(record.id, dict(record.config)) for record in records])
    await _save_demo_cards(services, [record.id for record in records])
    payments = await _payment_history(services, [record.id for record in records], now, seed)
    await seed_reconciliation(
        services, [record.id for record in records], _history_start(now), now, seed
    )
    await _demo_rules(services, {record.name: record.id for record in records})
    await services.health.restore()
    await services.settings.set_state("demo_traffic", True)
    return len(SANDBOXES), payments, ""


async def _demo_rules(services: Services, ids: dict[str, int]) -> None:
    """Two rules of the kind a bursar sets: large payments by bank transfer (the lowest fee),
    and ZiG payments through the mobile-money gateway."""
    cards, ecocash, bank = (
        ids["Sandbox Cards"],
        ids["Sandbox EcoCash"],
        ids["Sandbox Bank Transfers"],
    )
    await services.routing.save_rule(
        RuleDraft(
            (bank, cards),
            currency="USD",
            min_amount="1500",
            note="Term fees: the bank transfer's fee is the lowest",
        )
    )
    await services.routing.save_rule(
        RuleDraft((ecocash,), currency="ZWG", note="ZiG only through EcoCash")
    )


async def _save_demo_cards(services: Services, connections: list[int]) -> None:
    """Every family's card saved at every sandbox gateway, so payments can be tried at once;
    one family in twenty has a card its bank always declines."""

    def write(session: Session) -> None:
        rows: list[dict[str, object]] = []
        for guardian_id in session.scalars(select(Guardian.id).order_by(Guardian.id)):
            declined = guardian_id % 20 == 0
            token = f"{DECLINED_METHOD if declined else 'pm_sandbox_visa'}_{guardian_id}"
            label = "Visa •••• 0002" if declined else "Visa •••• 4242"
            rows.extend(
                {
                    "guardian_id": guardian_id,
                    "connection_id": connection_id,
                    "method": "card",
                    "token": token,
                    "customer": "",
                    "label": label,
                    "country": "",
                }
                for connection_id in connections
            )
        if rows:
            session.execute(insert(PaymentMethodRow), rows)

    await services.db.write(write)


HISTORY_SPACING = timedelta(seconds=30)  # a call every 30 s over the past day...
RECENT = timedelta(minutes=15)
RECENT_SPACING = timedelta(seconds=1)  # ...and every second over the last 15 minutes


def _outcome(
    behaviour: Behaviour, rng: random.Random, moment: datetime
) -> tuple[int, float, str | None]:
    """What a sandbox would have answered at `moment`: status, milliseconds, error class."""
    if behaviour.in_outage(moment.timestamp()):
        return 503, rng.uniform(5, 30), "http_5xx"
    latency = behaviour.latency(rng) * 1000
    if rng.random() < behaviour.error_rate:
        return 502, latency, "http_5xx"
    return 200, latency, None


def _history(session: Session, connections: list[tuple[int, dict[str, Any]]]) -> None:
    """A past day of calls and checks for each sandbox, drawn from its own behaviour (its
    latency, failure rate and outages), so the dashboard has graphs from the first moment."""
    now = datetime.now(UTC).replace(microsecond=0)
    for connection_id, config in connections:
        behaviour = behaviour_of(connection_id, config)
        rng = random.Random(connection_id)

        moments = [now - timedelta(days=1) + HISTORY_SPACING * i for i in range(2880)]
        moments = [m for m in moments if m < now - RECENT]
        moments += [now - RECENT + RECENT_SPACING * i for i in range(int(RECENT / RECENT_SPACING))]
        calls = []
        for moment in moments:
            status, latency, error = _outcome(behaviour, rng, moment)
            calls.append(
                {
                    "at": moment,
                    "connection_id": connection_id,
                    "operation": "account",
                    "method": "GET",
                    "url": f"{SANDBOX_URL}/v1/account",
                    "status_code": status,
                    "latency_ms": round(latency, 3),
                    "error_class": error,
                    "attempt": 1,
                }
            )
        checks = []
        for minute in range(24 * 60):
            moment = now - timedelta(days=1) + timedelta(minutes=minute)
            status, latency, error = _outcome(behaviour, rng, moment)
            checks.append(
                {
                    "connection_id": connection_id,
                    "at": moment,
                    "ok": error is None,
                    "latency_ms": round(latency, 3),
                    "error_class": error,
                    "detail": "" if error is None else f"Sandbox answered HTTP {status}.",
                }
            )
        session.execute(insert(RequestLogEntry), calls)
        session.execute(insert(HealthCheckRow), checks)


# --- payment history -----------------------------------------------------------------------------
#
# The demo's past payments are demo data, written straight into the payments tables with past
# timestamps: a gateway can only charge now, never "five weeks ago". Everything else follows the
# real thing: each payment goes to the gateways in the order the router (app/domain/routing.py)
# gives, learning from the outcomes before it, as it would live; a technical failure moves on to
# the next gateway; declines, answer times and fees are those the sandbox connections are set to
# give; and the idempotency keys are those `BillingService.invoice_due` would make, so charging one
# of these invoices later carries on where the history left off.

HISTORY_DAYS = 42
METHOD = "card"
# The office charges cards in office hours (Harare), mornings busiest, a lull at lunch; Saturday
# mornings, while the lessons are on, less.
OFFICE_HOURS = {8: 5, 9: 12, 10: 14, 11: 12, 12: 6, 13: 5, 14: 10, 15: 11, 16: 8, 17: 3}
SATURDAY_HOURS = {8: 3, 9: 8, 10: 8, 11: 6, 12: 2}
# The shares of last month's paid invoices paid with the card saved at the gateways (the rest in
# cash or by a bank transfer of the family's own), of this month's charged in its first days, and
# of last month's unpaid ones whose card was tried and declined.
CARD_PAID = 0.85
PAID_EARLY = 0.4
LATE_TRIED = 0.4
# Small things bought besides tuition: weight, description, price in US dollars (a grade's exam
# fee: None).
SUNDRIES: tuple[tuple[int, str, str | None], ...] = (
    (30, "Instrument hire — {month}", "10.00"),
    (20, "ABRSM Grade {grade} exam entry", None),
    (15, "Theory workbook", "12.00"),
    (15, "Spare strings and reeds", "8.00"),
    (10, "Recital tickets", "15.00"),
    (10, "Holiday workshop deposit", "25.00"),
)
ZWG_PER_USD = 27
BREAKER_OPENS = 40.0  # seconds into a sandbox's outage
# What the sandbox's books answer to a declined card (app/providers/sandbox_ledger.py), as the
# gateway driver reads it.
INSUFFICIENT_FUNDS = (
    FailureKind.SOFT_DECLINE,
    "card_declined/insufficient_funds",
    "Your card has insufficient funds.",
)
GENERIC_DECLINE = (
    FailureKind.HARD_DECLINE,
    "card_declined/generic_decline",
    "Your card was declined.",
)
STOLEN_CARD = (FailureKind.HARD_DECLINE, "card_declined/stolen_card", "Your card was declined.")


@dataclass(frozen=True)
class _Sandbox:
    """A demo gateway as the history needs it."""

    id: int
    name: str
    behaviour: Behaviour
    approval_rate: float
    fees: FeeSchedule


@dataclass(frozen=True)
class _Ask:
    """A charge the office made: when, for what, and what the story needs of its outcome
    ("any": as the gateway says; "approve": the family had put money aside; "decline")."""

    at: datetime
    guardian_id: int
    amount: Money
    description: str
    invoice_id: int | None = None
    tries: int = 1  # the invoice's how-many-th charge
    outcome: str = "any"
    mark_paid: bool = False  # this month's invoice, paid when this succeeds


@dataclass
class _HistoryBooks:
    """What the history wrote that the sandboxes' own books must hold, so that a refund of a
    past payment finds it: (connection, payment intent, amount, fee, when)."""

    charges: list[tuple[int, str, Money, Money, datetime]] = field(default_factory=list)
    payments: int = 0


def _office_moment(rng: random.Random, day: date, zone: ZoneInfo) -> datetime:
    """A moment in office hours on `day`, or on the Monday after when the office is closed."""
    weekday = day.weekday()
    if weekday == 6 or (weekday == 5 and rng.random() < 0.6):
        day += timedelta(days=7 - weekday)
    hours = SATURDAY_HOURS if day.weekday() == 5 else OFFICE_HOURS
    hour = rng.choices(list(hours), weights=list(hours.values()))[0]
    local = datetime.combine(day, time(hour, rng.randrange(60), rng.randrange(60)), zone)
    return local.astimezone(UTC)


def _plan_payments(
    rng: random.Random,
    session: Session,
    start: datetime,
    now: datetime,
    zone: ZoneInfo,
) -> tuple[list[_Ask], set[int]]:
    """The charges of the history, and the guardians whose saved card always declines."""
    invoices = session.execute(
        select(
            Invoice.id,
            Invoice.number,
            Invoice.guardian_id,
            Invoice.currency,
            Invoice.total_minor,
            Invoice.status,
            Invoice.issued_on,
            Invoice.due_on,
        )
        .where(Invoice.guardian_id.is_not(None))
        .order_by(Invoice.id)
    ).all()
    today = now.astimezone(zone).date()
    this_month = today.replace(day=1)
    asks: list[_Ask] = []

    def moment(day: date) -> datetime:
        return _office_moment(rng, day, zone)

    for invoice_id, number, guardian_id, currency, total, status, issued, due in invoices:
        if total <= 0 or guardian_id is None:
            continue
        amount = Money(total, currency)
        description = f"Invoice {number}"
        if status == InvoiceStatus.PAID.value:
            if rng.random() > CARD_PAID:
                continue  # paid at the office, in cash or by the family's own transfer
            draw = rng.random()
            if draw < 0.55:  # soon after it came
                day = issued + timedelta(days=int(rng.expovariate(1 / 2.5)))
            elif draw < 0.9:  # when it fell due
                day = due - timedelta(days=rng.randint(-1, 3))
            else:  # a little late
                day = due + timedelta(days=rng.randint(2, 10))
            asks.append(_Ask(moment(day), guardian_id, amount, description, invoice_id))
        elif status == InvoiceStatus.OPEN.value and issued < this_month:
            # Last month's, still unpaid: for most of them the card was tried and declined.
            if rng.random() < LATE_TRIED:
                day = due - timedelta(days=rng.randint(-2, 1))
                asks.append(
                    _Ask(moment(day), guardian_id, amount, description, invoice_id, 1, "decline")
                )
        elif status == InvoiceStatus.OPEN.value and rng.random() < PAID_EARLY:
            # This month's: some families ask for theirs to be charged at once.
            day = issued + timedelta(days=int(rng.expovariate(1 / 2)))
            asks.append(
                _Ask(moment(day), guardian_id, amount, description, invoice_id, mark_paid=True)
            )

    # Besides tuition, a few small things most weekdays.
    families = sorted(
        {(guardian, currency) for _i, _n, guardian, currency, *_ in invoices if guardian}
    )
    day = start.astimezone(zone).date()
    while day <= today:
        if day.weekday() < 5:
            count = rng.choices((0, 1, 2, 3), weights=(3, 4, 3, 1))[0]
        else:
            count = rng.choices((0, 1), weights=(3, 1))[0] if day.weekday() == 5 else 0
        for _ in range(count):
            guardian, currency = rng.choice(families)
            weights = [weight for weight, _text, _price in SUNDRIES]
            _weight, text, price = rng.choices(SUNDRIES, weights=weights)[0]
            grade = rng.randint(1, 8)
            usd = Decimal(price) if price is not None else Decimal(40 + 8 * grade)
            value = usd * ZWG_PER_USD if currency == "ZWG" else usd
            description = text.format(grade=grade, month=f"{day:%B %Y}")
            amount = Money.parse(f"{value:.2f}", currency)
            asks.append(_Ask(moment(day), guardian, amount, description))
        day += timedelta(days=1)
    asks = [ask for ask in asks if start <= ask.at < now]
    declined = {
        guardian_id
        for guardian_id, token in session.execute(
            select(PaymentMethodRow.guardian_id, PaymentMethodRow.token)
        )
        if token.startswith(DECLINED_METHOD)
    }
    return asks, declined


def _write_payment_history(
    session: Session, sandboxes: list[_Sandbox], now: datetime, seed: int
) -> _HistoryBooks:
    """Six weeks or so of the school's payments up to `now` (see above); nothing when the
    database holds payments already, so it is never written twice."""
    books = _HistoryBooks()
    if not sandboxes or session.scalar(select(PaymentRow.id).limit(1)) is not None:
        return books
    zone = ZoneInfo(TIMEZONE)
    rng = random.Random(seed * 7919 + 11)
    start = _history_start(now)
    asks, declined = _plan_payments(rng, session, start, now, zone)
    tokens = {
        (guardian_id, connection_id): token
        for guardian_id, connection_id, token in session.execute(
            select(
                PaymentMethodRow.guardian_id, PaymentMethodRow.connection_id, PaymentMethodRow.token
            ).where(PaymentMethodRow.method == METHOD)
        )
    }
    by_key = {str(sandbox.id): sandbox for sandbox in sandboxes}
    clock = [now.timestamp()]  # the moment of the charge being made

    def down(key: str) -> str | None:
        # The demo's traffic finds an outage within seconds, and the gateway's breaker opens:
        # only the payments in an outage's first moments are tried there.
        behaviour = by_key[key].behaviour
        if behaviour.in_outage(clock[0]) and not behaviour.in_outage(clock[0] - BREAKER_OPENS):
            return None
        return "its circuit breaker is open" if behaviour.in_outage(clock[0]) else None

    router = Router(
        [
            Gateway(key, sandbox.name, sandbox.fees, frozenset({METHOD}))
            for key, sandbox in by_key.items()
        ],
        down=down,
        rng=random.Random(seed * 7919 + 13),
    )
    queue = [(ask.at, n, ask) for n, ask in enumerate(asks)]
    heapq.heapify(queue)
    counter = itertools.count(len(queue))
    paid_invoices: list[int] = []
    reported: set[int] = set()
    payments: list[tuple[PaymentRow, list[PaymentAttemptRow]]] = []
    while queue:
        _at, _n, ask = heapq.heappop(queue)
        if ask.guardian_id in reported:
            continue  # the office charges no card its bank has said was stolen
        clock[0] = ask.at.timestamp()
        payment, attempts, declined_with = _simulate(
            rng, router, by_key, tokens, ask, ask.guardian_id in declined, books
        )
        if declined_with == STOLEN_CARD[1]:
            reported.add(ask.guardian_id)
        payments.append((payment, attempts))
        if payment.status == SUCCEEDED and ask.mark_paid and ask.invoice_id is not None:
            paid_invoices.append(ask.invoice_id)
        retry = _retry_after(rng, ask, payment.status, declined_with, zone)
        if retry is not None and retry.at < now:
            heapq.heappush(queue, (retry.at, next(counter), retry))
    # One bulk insert of the payments, then of their attempts (which need the payments' ids).
    session.add_all(payment for payment, _attempts in payments)
    session.flush()
    for payment, attempts in payments:
        for attempt in attempts:
            attempt.payment_id = payment.id
    session.add_all(attempt for _payment, attempts in payments for attempt in attempts)
    if paid_invoices:
        session.execute(
            update(Invoice)
            .where(Invoice.id.in_(paid_invoices))
            .values(status=InvoiceStatus.PAID.value)
        )
    books.payments = len(payments)
    return books


def _history_start(now: datetime) -> datetime:
    """Where the payment history begins: six weeks back, or the start of last month if earlier
    (last month's invoices were paid in it)."""
    zone = ZoneInfo(TIMEZONE)
    last_month = _month_start(now.astimezone(zone).date(), 1)
    return min(now - timedelta(days=HISTORY_DAYS), datetime.combine(last_month, time(0), zone))


def _retry_after(
    rng: random.Random, ask: _Ask, status: str, declined_with: str, zone: ZoneInfo
) -> _Ask | None:
    """The family's next try after a failed charge, if the story has one."""
    if status == SUCCEEDED or ask.invoice_id is None or declined_with == STOLEN_CARD[1]:
        return None  # a sundry is simply left, a stolen card paid for at the office
    day = ask.at.astimezone(zone).date()
    if ask.outcome == "decline":
        if ask.tries >= 2 or rng.random() < 0.65:
            return None
        # A week later the office tried once more, to no avail: still unpaid.
        later = _office_moment(rng, day + timedelta(days=rng.randint(6, 9)), zone)
        return replace(ask, at=later, tries=ask.tries + 1)
    if ask.tries >= 3 or (declined_with == GENERIC_DECLINE[1] and rng.random() < 0.5):
        return None  # paid some other way in the end
    if declined_with:
        # The family put money aside (or called their bank) before the next try.
        later = _office_moment(rng, day + timedelta(days=rng.randint(2, 6)), zone)
    else:  # no gateway could take it: tried again a little later
        later = ask.at + timedelta(minutes=rng.randint(20, 90))
    return replace(ask, at=later, tries=ask.tries + 1, outcome="approve")


def _simulate(
    rng: random.Random,
    router: Router,
    sandboxes: dict[str, _Sandbox],
    tokens: dict[tuple[int, int], str],
    ask: _Ask,
    card_declines: bool,
    books: _HistoryBooks,
) -> tuple[PaymentRow, list[PaymentAttemptRow], str]:
    """One charge as the payment service makes it: the router's order, an attempt per gateway
    until one answers, the payment following the answer. Returns also the decline's code."""
    reference = f"pay_{rng.getrandbits(128):032x}"
    key = (
        f"invoice:{ask.invoice_id}:{ask.tries}"
        if ask.invoice_id is not None
        else f"ui:{rng.getrandbits(128):032x}"
    )
    order = ChargeOrder(
        key, ask.amount, METHOD, (), ask.invoice_id, ask.guardian_id, ask.description
    )
    payment = PaymentRow(
        reference=reference,
        idempotency_key=key,
        request_digest=order.digest(),
        invoice_id=ask.invoice_id,
        guardian_id=ask.guardian_id,
        amount_minor=ask.amount.minor,
        currency=ask.amount.currency,
        method=METHOD,
        status=FAILED,
        description=ask.description[:200],
        created_at=ask.at,
    )
    stamp = ask.at.timestamp()
    decision = router.decide(PaymentAsk(ask.amount, METHOD), stamp)
    why = decision.as_dict()
    attempts: list[PaymentAttemptRow] = []
    moment = ask.at + timedelta(milliseconds=rng.randint(20, 60))
    declined_with = ""
    for number, gateway_key in enumerate(decision.order[:MAX_ATTEMPTS], start=1):
        sandbox = sandboxes[gateway_key]
        behaviour = sandbox.behaviour
        attempt = PaymentAttemptRow(
            number=number,
            reference=f"{reference}-{number}",
            connection_id=sandbox.id,
            token=tokens.get((ask.guardian_id, sandbox.id), ""),
            decision=why,
            started_at=moment,
        )
        attempts.append(attempt)
        payment.connection_id = sandbox.id
        # Its errors mostly pass on the client's retries; now and then all three fail.
        failing = behaviour.in_outage(moment.timestamp()) or rng.random() < behaviour.error_rate / 5
        if failing:
            # Three tries, each answered at once with a 503, with the client's waits between.
            latency = sum(rng.uniform(5, 30) for _ in range(3)) + 1000 * (
                rng.uniform(0, 0.5) + rng.uniform(0, 1.0)
            )
            failure: tuple[FailureKind, str, str] | None = (
                FailureKind.TECHNICAL,
                "http_503",
                f"{sandbox.name} had a problem of its own (HTTP 503).",
            )
            gateway_id = ""
        else:
            latency = behaviour.latency(rng) * 1000
            failure = _decline(rng, sandbox, ask, card_declines)
            gateway_id = f"pi_sbx{rng.getrandbits(64):016x}"
        attempt.latency_ms = round(latency, 3)
        attempt.finished_at = moment + timedelta(milliseconds=latency)
        attempt.gateway_id = gateway_id
        moment = attempt.finished_at + timedelta(milliseconds=rng.randint(5, 25))
        router.record(
            gateway_key,
            METHOD,
            ask.amount.currency,
            success=failure is None,
            technical=failure[1] if failure and failure[0] is FailureKind.TECHNICAL else "",
            latency_ms=latency,
            now=attempt.started_at.timestamp(),
        )
        payment.updated_at = attempt.finished_at
        payment.gateway_id = gateway_id
        if failure is None:
            fee = sandbox.fees.fee(ask.amount, METHOD)
            attempt.status = payment.status = SUCCEEDED
            payment.fee_minor = fee.minor
            # An earlier attempt's technical failure is not the payment's.
            payment.failure_kind = payment.failure_code = payment.failure_message = None
            books.charges.append((sandbox.id, gateway_id, ask.amount, fee, attempt.started_at))
            return payment, attempts, ""
        kind, code, message = failure
        attempt.status = FAILED
        attempt.failure_kind = payment.failure_kind = kind.value
        attempt.failure_code = payment.failure_code = code
        attempt.failure_message = payment.failure_message = message
        if kind is not FailureKind.TECHNICAL:
            declined_with = code
            break  # a decline is the payer's bank speaking: no other gateway is tried
    return payment, attempts, declined_with


def _decline(
    rng: random.Random, sandbox: _Sandbox, ask: _Ask, card_declines: bool
) -> tuple[FailureKind, str, str] | None:
    """The bank's answer at a sandbox: None when the payment is approved."""
    if card_declines:
        return STOLEN_CARD
    if ask.outcome == "approve":
        return None
    if ask.outcome != "decline" and rng.random() < sandbox.approval_rate:
        return None
    return INSUFFICIENT_FUNDS if rng.random() < SOFT_DECLINE_SHARE else GENERIC_DECLINE


async def _payment_history(
    services: Services, connections: list[int], now: datetime, seed: int
) -> int:
    """The demo's past payments at its sandbox gateways (see above); how many were written."""
    sandboxes = []
    for connection_id in connections:
        record = await services.connections.connection(connection_id)
        provider = await services.connections.provider(connection_id)
        if not isinstance(provider, PaymentGateway):
            continue
        sandboxes.append(
            _Sandbox(
                connection_id,
                record.name,
                behaviour_of(connection_id, record.config),
                float(record.config.get("approval_rate", 0.95)),
                provider.fees,
            )
        )
    books = await services.db.write(_write_payment_history, sandboxes, now, seed)
    _keep_in_sandbox_books(books, {sandbox.id: sandbox for sandbox in sandboxes})
    services.events.publish(PAYMENTS_TOPIC, {})
    return books.payments


def _keep_in_sandbox_books(books: _HistoryBooks, sandboxes: dict[int, _Sandbox]) -> None:
    """The past payments that were taken, in each sandbox's own books too, so that one can be
    refunded from the Payments page as a payment taken today can."""
    by_connection: dict[int, list[tuple[str, Money, Money, datetime]]] = defaultdict(list)
    for connection_id, gateway_id, amount, fee, at in books.charges:
        by_connection[connection_id].append((gateway_id, amount, fee, at))
    for connection_id, charges in by_connection.items():
        sandbox = sandboxes[connection_id]
        ledger = ledger_of(connection_id, sandbox.approval_rate, sandbox.fees)
        transactions = []
        for gateway_id, amount, fee, at in charges:
            suffix = gateway_id.removeprefix("pi_sbx")
            created = int(at.timestamp())
            transaction = {
                "id": f"txn_sbx{suffix}",
                "object": "balance_transaction",
                "type": "charge",
                "amount": amount.minor,
                "fee": fee.minor,
                "net": amount.minor - fee.minor,
                "currency": amount.currency.lower(),
                "source": f"ch_sbx{suffix}",
                "created": created,
                "available_on": created + 2 * 86_400,
            }
            transactions.append(transaction)
            ledger.intents[gateway_id] = {
                "id": gateway_id,
                "object": "payment_intent",
                "amount": amount.minor,
                "currency": amount.currency.lower(),
                "payment_method": "",
                "customer": None,
                "metadata": {},
                "created": created,
                "status": "succeeded",
                "latest_charge": {"id": f"ch_sbx{suffix}", "balance_transaction": transaction},
            }
        ledger.balance[:0] = transactions  # older than anything the sandbox has taken itself
        ledger._save()  # the books have no public way in for past charges; this is demo data


async def seed_demo(
    services: Services, *, today: date | None = None, seed: int = 2026
) -> DemoSummary:
    """Fill an empty database with the demo school, all or nothing.

    Lessons are spread over six whole weeks in Africa/Harare, from the Monday of the week before
    `today` (default: today there). Lessons that ended before now are completed; with an explicit
    `today`, "now" is noon that day, so the same seed and day always give the same school.
    """
    zone = ZoneInfo(TIMEZONE)
    now = datetime.now(zone) if today is None else datetime.combine(today, time(12), zone)
    day = now.date() if today is None else today
    await services.db.read(_refuse_unless_empty)
    plan = _plan_demo(day, now, seed)
    summary = await services.db.write(_write, plan)
    await services.settings.reload(announce=[key for key, _ in SCHOOL_SETTINGS])
    connections, payments, note = await _connect_sandboxes(services, now, seed)
    summary = replace(summary, connections=connections, payments=payments, note=note)
    for topic in (
        TOPIC_TEACHERS,
        TOPIC_ROOMS,
        TOPIC_GUARDIANS,
        TOPIC_STUDENTS,
        TOPIC_LESSONS,
        TOPIC_INVOICES,
    ):
        services.events.publish(topic, {})
    return summary
