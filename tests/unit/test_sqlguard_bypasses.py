"""The SQL guard fails closed: known bypasses, comments, quoting, case and Unicode tricks.

Each refused query here was either let through by the old denylist (fileCluster,
icebergLocal, a quoted `file`) or reads a file / another system under chDB's
readonly=1 (``SELECT file('/etc/passwd')`` and ``DESCRIBE file(...)`` do).
"""

from __future__ import annotations

import pytest

from dash_app.pages.sql import EXAMPLES, example_sql
from dash_app.sqlguard import check_sql, parse_sql
from dash_app.sqltokens import tokenize
from shardsense.errors import ShardSenseError, SqlRefused

pytestmark = pytest.mark.unit

FILE = "'/etc/passwd'"


@pytest.mark.parametrize(
    "sql",
    [
        # the three: a denylist of exact names missed them
        f"SELECT * FROM fileCluster('default', {FILE})",
        "SELECT * FROM icebergLocal('/var/lib/x')",
        f"SELECT * FROM `file`({FILE}, 'LineAsString')",
        # other quoting
        f'SELECT * FROM "file"({FILE})',
        f"SELECT * FROM `fILe`({FILE})",
        # scalar file() reads a file even under readonly=1
        f"SELECT file({FILE})",
        f"SELECT FILE({FILE})",
        f"SELECT length(fIlE({FILE}))",
        f"DESCRIBE file({FILE})",
        f"DESC TABLE file({FILE})",
        # table positions are an allowlist: unknown or future table functions fail closed
        "SELECT * FROM someFutureTableFunction('x')",
        "SELECT * FROM primes(10)",
        "SELECT * FROM merge('system', '^users$')",
        "SELECT * FROM loop(numbers(3))",
        "SELECT * FROM remote('127.0.0.1', system.one)",
        f"SELECT * FROM numbers(1) AS a, file({FILE}) AS b",
        f"SELECT * FROM numbers(1) AS a, b, newThing({FILE})",
        "SELECT * FROM numbers(1) AS a JOIN s3Cluster('c', 'x') AS b ON 1",
        "SELECT * FROM numbers(1) AS a LEFT ANY JOIN mysql('h', 'd', 't', 'u', 'p') AS b USING x",
        f"SELECT * FROM numbers(3) WHERE number IN (SELECT 1 FROM url({FILE}, 'CSV'))",
        f"WITH t AS (SELECT * FROM view(SELECT * FROM file({FILE}))) SELECT * FROM t",
        f"SELECT * FROM default.file({FILE})",
        "SELECT * FROM Python(df)",
        "SELECT * FROM arrowstream('x')",
        # comments between the name and its call
        f"SELECT * FROM /* hi */ file({FILE})",
        f"SELECT * FROM file/**/({FILE})",
        f"SELECT * FROM file -- note\n({FILE})",
        f"SELECT * FROM file # note\n({FILE})",
        f"SELECT 1 #x\n, file({FILE})",  # '#x' is not a comment to ClickHouse
        # functions that reach other systems or read tables named by a string
        "SELECT dictGet('d', 'a', toUInt64(1))",
        "SELECT hasColumnInTable('127.0.0.1:9000', 'u', 'p', 'd', 't', 'c')",
        "SELECT aiGenerate('write me a poem')",
        "SELECT joinGet('j', 'v', 1)",
        "SELECT getServerSetting('path')",
        # system tables are an allowlist too
        "SELECT * FROM system.users",
        "SELECT * FROM system.named_collections",
        "SELECT query FROM system.query_log",
        "SELECT query FROM system.processes",
        "SELECT * FROM system.`users`",
        'SELECT * FROM "system"."grants"',
        "SELECT * FROM system . quotas",
        "SELECT * FROM system/**/./**/roles",
        "SELECT * FROM SYSTEM.USERS",
        "DESCRIBE system.users",
        "EXISTS TABLE system.settings_profiles",
        # query parameters of type Identifier name any table
        "SELECT * FROM {t:Identifier}",
        "SELECT * FROM { t : identifier }",
        # SHOW shows only harmless things
        "SHOW GRANTS",
        "SHOW USERS",
        "SHOW CREATE USER default",
        "SHOW PROCESSLIST",
        "SHOW ACCESS",
        "SHOW CREATE t",
    ],
)
def test_files_other_systems_and_secrets_are_refused(sql: str) -> None:
    with pytest.raises(SqlRefused) as err:
        check_sql(sql)
    assert err.value.code in (497, 164), err.value
    assert str(err.value).startswith("Refused:")


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT * FROM file\u200b({FILE})",  # ClickHouse skips a zero-width space
        f"SELECT\u00a0*\u00a0FROM\u00a0file({FILE})",  # and a no-break space
        f"SELECT * FROM \u201cfile\u201d({FILE})",  # “file” is a quoted identifier to it
        f"SELECT \uff46\uff49\uff4c\uff45({FILE})",  # fullwidth letters
        "SELECT 1 \u2212 1",  # the minus sign it also reads
        "SELECT 1\x00",
    ],
)
def test_non_ascii_code_is_refused(sql: str) -> None:
    with pytest.raises(SqlRefused, match="only ASCII"):
        check_sql(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1\\G DROP TABLE t",
        "SELECT 1 /* ; */ ; DROP TABLE t",
        "SELECT $$x$$; DROP TABLE t",
        "SELECT 'it''s'; DROP TABLE t",
        "SELECT \"a;b\"; INSERT INTO t VALUES (1)",
    ],
)
def test_a_second_statement_is_refused_however_it_hides(sql: str) -> None:
    with pytest.raises(SqlRefused, match="one statement at a time") as err:
        check_sql(sql)
    assert err.value.code == 62


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1 INTO OUTFILE '/tmp/x'", "SELECT 1 into/**/outfile '/tmp/x'",
     "SHOW TABLES INTO OUTFILE 'x'", "WITH 1 AS a SELECT a INTO OUTFILE 'x' TRUNCATE"],
)
def test_into_outfile_is_refused(sql: str) -> None:
    with pytest.raises(SqlRefused, match="INTO OUTFILE"):
        check_sql(sql)


@pytest.mark.parametrize(
    "sql",
    ["SELECT 'unclosed", "SELECT `x", 'SELECT "x', "SELECT 1 /* never closed",
     "SELECT 1 /* /* nested */ still open"],
)
def test_unterminated_quotes_and_comments_are_refused(sql: str) -> None:
    with pytest.raises(SqlRefused, match="not closed"):
        check_sql(sql)


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT 'file({FILE})', \"file\", `file` FROM numbers(1) AS file",  # names, no calls
        f"SELECT $$ file({FILE}) $$, $tag$; DROP$tag$",
        f"SELECT 1 /* file({FILE}) /* nested */ ; DROP */",
        f"SELECT 1 -- ; file({FILE})",
        f"SELECT 1 # ; file({FILE})",
        "SELECT '\uff46\uff49\uff4c\uff45(', 'caf\u00e9' AS `caf\u00e9`",  # Unicode inside quotes
        "SELECT count() FROM numbers(3) AS a, numbers(2) AS b",
        "SELECT * FROM generateRandom('a UInt8') LIMIT 3",
        "SELECT * FROM values('a UInt8', 1, 2)",
        "SELECT * FROM zeros(3)",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM view(SELECT 1)",
        "SELECT x FROM (SELECT [1, 2] AS arr) ARRAY JOIN arrayEnumerate(arr) AS x",
        "SELECT x FROM (SELECT 1 AS a) LEFT ARRAY JOIN range(3) AS x, range(2) AS y",
        "SELECT a FROM (SELECT 1 AS a) AS l JOIN (SELECT 1 AS a) AS r USING (a)",
        "SELECT formatReadableSize(1), format('{}', 1), deltaSum(number) FROM numbers(3)",
        "SELECT name FROM system.tables WHERE database = currentDatabase()",
        "SELECT * FROM system.one, system.numbers LIMIT 1",
        "SELECT * FROM information_schema.tables",
        "SELECT {x:UInt8} + 1, {s:String}",
        "SELECT number FROM numbers(10) FORMAT JSONEachRow",
        "SHOW TABLES FROM system",
        "SHOW CREATE TABLE batch_timings",
        "SHOW DATABASES",
        "DESC TABLE \"default\".\"batch_timings\"",
        "EXPLAIN SELECT 1",
        "(((SELECT 1)))",
    ],
)
def test_reads_pass(sql: str) -> None:
    assert check_sql(sql) == sql


@pytest.mark.parametrize("title", sorted(EXAMPLES))
def test_every_console_example_passes(title: str) -> None:
    sql = example_sql(title, "job-1")
    assert check_sql(sql) == sql


@pytest.mark.parametrize(
    ("sql", "fmt"),
    [("SELECT 1", None), ("SELECT 1 FORMAT JSON", "JSON"), ("SELECT 1 format `Native`;", "Native"),
     ("SELECT 1 FORMAT CSV SETTINGS x = 1", "CSV"), ("SELECT format FROM t", None),
     ("SELECT format('{}', 1)", None)],
)
def test_format_clause_is_found(sql: str, fmt: str | None) -> None:
    assert parse_sql(sql).format == fmt


def test_refusals_are_shardsense_errors_with_clickhouse_codes() -> None:
    with pytest.raises(ShardSenseError) as err:
        check_sql("INSERT INTO t VALUES (1)")
    assert isinstance(err.value, ValueError)
    assert (err.value.code, err.value.name) == (164, "READONLY")  # type: ignore[attr-defined]


def test_the_lexer_reads_quoted_names_like_clickhouse() -> None:
    texts = [(t.kind, t.text) for t in tokenize('SELECT `a``b`, "c\\"d", \'e\\\'f\'')]
    assert texts == [("word", "SELECT"), ("name", "a`b"), ("punct", ","), ("name", 'c"d'),
                     ("punct", ","), ("string", "'e\\'f'")]
