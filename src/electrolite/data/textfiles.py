"""Reading raw text: file formats, encodings, documents, sentences, and the built-in corpus.

Shared by ``tokenizer.train_tokenizer`` and ``corpus.prepare`` (which re-exports the public names).
Formats, by file name: ``.txt`` (documents separated by blank lines; the lines of a document are
joined with spaces), ``.txt.gz`` (the same, gzipped) and ``.jsonl`` / ``.jsonl.gz`` (one JSON
object per line with a string field ``text``). Files are streamed in 1 MiB chunks, never read whole.
"""

from __future__ import annotations

import ast
import codecs
import gzip
import importlib
import importlib.util
import inspect
import os
import queue
import re
import sysconfig
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import chain
from typing import TypeVar

from electrolite.errors import UserError, parse_json

_T = TypeVar("_T")
_CHUNK_BYTES = 1 << 20
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, what a JSON ``"\\ud800"`` escape decodes to.

    Such a string is not Unicode text: it cannot be written as UTF-8 and tokenizers refuse it.
    (Valid UTF-8 never decodes to one, and json joins an escaped surrogate pair into one character.)
    """
    return _SURROGATE.search(text) is not None


def _iter_line_blocks(
    path: str, errors: str, on_read: Callable[[int], None] | None = None
) -> Iterator[list[str]]:
    """Yields the complete lines (newline removed) of each ~1 MiB read, decoding incrementally.

    Nothing bigger than one chunk plus one line is ever held. ``on_read`` gets the number of
    bytes read from disk (compressed bytes for .gz) after each chunk, for progress bars.
    """
    if errors not in ("strict", "replace"):
        raise UserError(f"encoding errors must be 'strict' or 'replace', got {errors!r}")
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    gz = path.lower().endswith(".gz")
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        decoder = codecs.getincrementaldecoder("utf-8")(errors)
        fed = 0  # bytes of (decompressed) text given to the decoder so far
        newlines = 0  # lines completed before the current chunk, for error messages
        disk_pos = 0
        tail = ""
        while True:
            try:
                data = stream.read(_CHUNK_BYTES)
            except (OSError, EOFError, zlib.error) as e:
                raise UserError(f"{path}: cannot read ({e})") from None
            first = fed == 0
            buffered = decoder.getstate()[0]  # bytes of an unfinished character from the last chunk
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                # e.start indexes buffered + data; '\n' never occurs inside a UTF-8 sequence.
                bad = fed - len(buffered) + e.start
                line = newlines + (buffered + data)[: e.start].count(b"\n") + 1
                where = " of the decompressed text" if gz else ""
                raise UserError(
                    f"{path} line {line}: invalid UTF-8 at byte {bad}{where} "
                    "(use --encoding-errors replace to substitute U+FFFD)"
                ) from None
            fed += len(data)
            if first:
                text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not text
            if on_read is not None:
                pos = raw.tell()
                on_read(pos - disk_pos)
                disk_pos = pos
            if not data:
                if tail or text:
                    yield [tail + text]
                return
            lines = (tail + text).split("\n")
            tail = lines.pop()
            newlines += len(lines)
            yield lines


def iter_documents(path: str, errors: str = "strict", on_read: Callable[[int], None] | None = None) -> Iterator[str]:
    """Streams the documents of a .txt, .txt.gz or .jsonl file (see the module docstring).

    Args:
        path: the file to read.
        errors: ``"strict"`` makes invalid UTF-8 a ``UserError`` naming the byte offset of the
            first bad byte; ``"replace"`` substitutes U+FFFD.
        on_read: called with the number of bytes read from disk after each chunk (progress bars).

    Raises:
        UserError: missing, unreadable or empty file, invalid UTF-8 (strict), a bad JSON line.
    """
    path = os.fspath(path)
    name = path.lower().removesuffix(".gz")
    count = 0
    if name.endswith(".jsonl"):
        lineno = 0
        for lines in _iter_line_blocks(path, errors, on_read):
            for line in lines:
                lineno += 1
                if not line.strip():
                    continue
                obj = parse_json(line, f"{path} line {lineno}")
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise UserError(f'{path} line {lineno}: expected an object with a string "text" field')
                text = obj["text"].strip()
                if lone_surrogate(text):
                    if errors == "strict":
                        raise UserError(f'{path} line {lineno}: "text" holds a lone surrogate escape, not Unicode '
                                        "text (use --encoding-errors replace to substitute U+FFFD)")
                    text = _SURROGATE.sub("\ufffd", text)
                if text:
                    count += 1
                    yield text
    else:
        current: list[str] = []  # the stripped lines of the document being read
        for lines in _iter_line_blocks(path, errors, on_read):
            for line in lines:
                line = line.strip()
                if line:
                    current.append(line)
                elif current:
                    count += 1
                    yield " ".join(current)
                    current = []
        if current:
            count += 1
            yield " ".join(current)
    if count == 0:
        raise UserError(f"{path}: no documents (the file is empty)")


# End punctuation plus closing quotes/brackets, then whitespace, unless the next character is a
# lowercase letter ("What?" he said) or the period ends a common abbreviation or an initial.
_SENTENCE_END = re.compile(
    r"([.!?](?<!\bMrs\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\b[A-Z]\.)"
    r"[\"'\u201d\u2019)\]]*)\s+(?=[^\sa-z])"
)


def split_sentences(document: str) -> list[str]:
    """Splits a document into sentences with a simple regex (newlines also end sentences).

    Args:
        document: one document's text.
    """
    return [s for s in map(str.strip, _SENTENCE_END.sub("\\1\n", document).split("\n")) if s]


def read_sentence_blocks(files: list[str], errors: str = "strict", on_read: Callable[[int], None] | None = None,
                         block_sentences: int = 8192) -> Iterator[tuple[list[str], list[int]]]:
    """Streams the files' documents as blocks of sentences, ready for ``encode_batch``.

    Args:
        files: text files, read in order.
        errors: ``"strict"`` or ``"replace"`` (see ``iter_documents``).
        on_read: called with the number of bytes read from disk after each chunk (progress bars).
        block_sentences: about this many sentences per block (whole documents only).

    Yields:
        ``(sentences, counts)``: the sentences of consecutive documents and how many each has.
    """
    sentences: list[str] = []
    counts: list[int] = []
    for path in files:
        for doc in iter_documents(path, errors, on_read):
            parts = split_sentences(doc)
            sentences.extend(parts)
            counts.append(len(parts))
            if len(sentences) >= block_sentences:
                yield sentences, counts
                sentences, counts = [], []
    if counts:
        yield sentences, counts


def prefetch(items: Iterable[_T], depth: int) -> Generator[_T, None, None]:
    """Iterates ``items`` in a background thread, up to ``depth`` items ahead.

    Exceptions raised there are re-raised here, in order. Closing the returned generator stops
    the thread. Reading, decompressing and splitting text this way overlaps with tokenizing.

    Args:
        items: any iterable; it is consumed in the background thread.
        depth: how many items may wait in the queue.
    """
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put((done, e))

    thread = threading.Thread(target=produce, name="electrolite-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()



# ---------------------------------------------------------------------------------------------
# The built-in corpus: English documentation shipped inside Python's standard library
# ---------------------------------------------------------------------------------------------

# A fixed list, so the text depends only on the Python version. Modules with Python source are
# parsed with `ast` (nothing runs); built-in and extension modules are imported and inspected.
# Names that a Python version lacks are skipped. Test folders inside packages are left out.
_BUILTIN_MODULES = (
    "builtins", "abc", "aifc", "argparse", "array", "ast", "asynchat", "asyncio", "asyncore", "base64",
    "bdb", "binascii", "bisect", "bz2", "calendar", "cgi", "chunk", "cmath", "cmd", "code", "codecs",
    "codeop", "collections", "colorsys", "compileall", "concurrent", "configparser", "contextlib",
    "contextvars", "copy", "csv", "ctypes", "dataclasses", "datetime", "dbm", "decimal", "_pydecimal",
    "difflib", "dis", "distutils", "doctest", "email", "enum", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "gc", "getopt", "gettext", "glob", "graphlib", "gzip",
    "hashlib", "heapq", "hmac", "html", "http", "idlelib", "imaplib", "imghdr", "imp", "importlib",
    "inspect", "io", "_io", "_pyio", "ipaddress", "itertools", "json", "keyword", "lib2to3",
    "linecache", "locale", "logging", "lzma", "mailbox", "mailcap", "math", "mimetypes",
    "modulefinder", "multiprocessing", "netrc", "nntplib", "ntpath", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pipes", "pkgutil", "platform", "plistlib", "poplib", "posix",
    "posixpath", "pprint", "profile", "pstats", "pyclbr", "pydoc", "queue", "quopri", "random", "re",
    "reprlib", "rlcompleter", "runpy", "sched", "secrets", "selectors", "shlex", "shutil", "signal",
    "site", "smtpd", "smtplib", "sndhdr", "socket", "_socket", "socketserver", "sqlite3", "ssl",
    "stat", "statistics", "string", "_strptime", "struct", "subprocess", "sunau", "symtable", "sys",
    "sysconfig", "tabnanny", "tarfile", "telnetlib", "tempfile", "textwrap", "_thread", "threading",
    "time", "timeit", "tkinter", "tokenize", "tomllib", "trace", "traceback", "tracemalloc", "turtle",
    "turtledemo", "types", "typing", "unicodedata", "unittest", "urllib", "uu", "uuid", "warnings",
    "wave", "weakref", "webbrowser", "wsgiref", "xdrlib", "xml", "xmlrpc", "zipapp", "zipfile",
    "zipimport", "zlib", "zoneinfo",
)
_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__"}
_HOLDERS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.Try, ast.With, ast.ExceptHandler)
_COMMENT_LINE = re.compile(r"^[ \t]*#+ ?(.*)$")


def _clean(text: object) -> str:
    """Non-blank lines, stripped: a document must not contain a blank line (the .txt separator)."""
    if not isinstance(text, str):
        return ""
    return "\n".join(line for line in map(str.strip, text.splitlines()) if line)


def _source_texts(path: str) -> Iterator[str]:
    """Docstrings, then prose comments (runs of whole-line comments: 8+ words, mostly letters)."""
    try:
        with open(path, "rb") as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return
    # Depth-first through definitions and the statements that can hold them (if/try/with), not
    # through every expression: ast.walk would visit ~1M nodes for the whole list.
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield ast.get_docstring(node) or ""
        for field in ("body", "orelse", "handlers", "finalbody"):
            stack.extend(reversed([n for n in getattr(node, field, ()) if isinstance(n, _HOLDERS)]))
    block: list[str] = []
    for line in source.decode("utf-8", "replace").splitlines() + [""]:
        match = _COMMENT_LINE.match(line)
        if match and not match.group(1).startswith("!") and "-*-" not in line:  # not #! or coding lines
            block.append(match.group(1))
            continue
        text = " ".join(block).strip()
        letters = sum(c.isalpha() or c == " " for c in text)
        if len(text.split()) >= 8 and letters >= 0.85 * len(text):
            yield text
        block = []


def _runtime_texts(name: str) -> Iterator[str | None]:
    """Docstrings of a built-in or extension module, its classes, functions and methods."""
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a module this platform lacks is simply skipped
        return
    yield module.__doc__
    for _, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != name or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        yield obj.__doc__
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                if inspect.isroutine(member) or inspect.isdatadescriptor(member):
                    yield getattr(member, "__doc__", None)


def _module_texts(name: str) -> Iterator[str | None]:
    # Looked up in the standard library folder itself, so that nothing on sys.path (a file in
    # the current directory, setuptools' distutils shim) can stand in for a stdlib module.
    stdlib = sysconfig.get_paths()["stdlib"]
    path = os.path.join(stdlib, name)
    if os.path.isdir(path):
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for file in sorted(files):
                if file.endswith(".py"):
                    yield from _source_texts(os.path.join(folder, file))
    elif os.path.isfile(path + ".py"):
        yield from _source_texts(path + ".py")
    else:  # no source: a built-in or extension module, if this Python has it
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return
        if spec is not None and (spec.origin == "built-in" or (spec.origin or "").startswith(stdlib)):
            yield from _runtime_texts(name)


def builtin_corpus_text() -> Iterator[str]:
    """Yields the built-in demo corpus, one document at a time, available without any download.

    The English documentation inside Python's standard library: the ``pydoc_data`` help topics,
    then the docstrings (and prose comment blocks) of a fixed list of stdlib modules. Documents
    shorter than 40 characters are dropped, duplicates are kept once, the order is fixed.
    On CPython 3.11.7 this is 13,152 documents, 3.0 MB of text, built in 3 to 4 s.
    """
    seen: set[str] = set()
    topics: dict[str, str]
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        topics = {}
    texts = chain((topics[key] for key in sorted(topics)), chain.from_iterable(map(_module_texts, _BUILTIN_MODULES)))
    for text in texts:
        text = _clean(text)
        key = text.replace("\n", " ")  # what reading the .txt back gives
        if len(text) >= 40 and key not in seen:
            seen.add(key)
            yield text


def write_builtin_corpus(path: str) -> dict:
    """Writes the built-in corpus as a .txt file, documents separated by blank lines.

    Args:
        path: the .txt file to write (atomically: a temporary file, then a rename).

    Returns:
        ``{"path", "documents", "bytes"}``.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    documents = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for text in builtin_corpus_text():
                f.write(text + "\n\n")
                documents += 1
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"path": path, "documents": documents, "bytes": os.path.getsize(path)}
