"""Encoding of task arguments and results (SPEC §5).

Every payload starts with one tag byte naming its format, so a reader never guesses:

- ``M`` msgpack written by msgspec (the codec: ``omniq._msgpack``). Values msgpack would
  not round-trip exactly (tuple, set, frozenset, Decimal, UUID, date, time, datetime with
  its time zone, timedelta, bytearray, complex, ints beyond 64 bits, dicts whose keys are
  not plain scalars) travel as typed msgpack extension values, so they come back with
  their type.
- ``D`` an unsigned dill pickle, for what msgpack cannot carry (custom classes, enum members,
  lambdas, closures, exceptions ...).
- ``S`` a dill pickle preceded by its HMAC-SHA256.

Security: unpickling runs code, so a dill payload is only as trustworthy as whoever could
write it. With a key (``secret_key``, or the key file an embedded store keeps under
``base_dir``), every dill payload is signed and a reader refuses (``PayloadSignatureError``)
an unsigned or altered one before unpickling anything; several keys may be given, to
rotate them: the first signs, any of them verifies. Without a key, dill is refused both
ways unless ``allow_unsigned_dill`` says that whoever can write to the store is trusted.
msgpack payloads never run code and need no signature. See SECURITY.md.

Example::

    >>> manager = SerializationManager(secret_key="s3cret")
    >>> manager.loads(manager.dumps((1, {2: "two"})))
    (1, {2: 'two'})
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Final

from omniq._msgpack import (
    DECODER,
    ENCODER,
    FAST,
    PLAIN,
    MsgspecSerializer,
    NeedsDill,
    SerializationDetector,
    callable_name,
    flat,
    type_name,
    wire,
)
from omniq.errors import ConfigError, PayloadSignatureError, SerializationError

__all__ = [
    "DillSerializer",
    "MsgspecSerializer",
    "SerializationDetector",
    "SerializationManager",
    "load_or_create_key",
]

_TAG_MSGSPEC: Final = 0x4D  # "M"
_TAG_DILL: Final = 0x44  # "D"
_TAG_SIGNED: Final = 0x53  # "S"
_PREFIX_MSGSPEC: Final = b"M"
_MAC_SIZE: Final = hashlib.sha256().digest_size
_MODES: Final = ("auto", "msgspec", "dill")


class DillSerializer:
    """The dill codec, signing with HMAC-SHA256 when given a key.

    ``secret_key`` is one key or a sequence of keys: ``dumps`` signs with the first and
    ``loads`` accepts a signature made with any of them (so a fleet can move to a new key
    without stopping: add it second, then first, then drop the old one). With a key,
    ``dumps`` returns the 32-byte MAC followed by the pickle and ``loads`` checks the MAC
    (constant-time) before unpickling anything. Without a key, ``loads`` unpickles whatever
    it is given: only use it on data from a trusted writer.
    """

    def __init__(self, secret_key: bytes | Sequence[bytes] | None = None) -> None:
        if secret_key is None:
            keys: tuple[bytes, ...] = ()
        elif isinstance(secret_key, bytes):
            keys = (secret_key,)
        else:
            keys = tuple(secret_key)
        self._keys = keys

    @property
    def signs(self) -> bool:
        """True when payloads are signed and checked."""
        return bool(self._keys)

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` with dill (and sign it when a key is set)."""
        import dill  # nosec B403 # what it loads is signed or allowed (see loads); ~10 ms, paid on first use

        try:
            body: bytes = dill.dumps(value, recurse=True)
        except Exception as exc:
            raise SerializationError(
                f"dill cannot encode a value of type {type_name(type(value))}: {exc}"
            ) from exc
        if not self._keys:
            return body
        return hmac.digest(self._keys[0], body, "sha256") + body

    def loads(self, data: bytes | memoryview) -> Any:
        """Check the signature (when a key is set), then unpickle."""
        body = data
        if self._keys:
            if len(data) < _MAC_SIZE:
                raise PayloadSignatureError("dill payload is too short to hold a signature")
            body = data[_MAC_SIZE:]
            mac = bytes(data[:_MAC_SIZE])
            # Every key is tried (no early exit): the time taken says nothing of which matched.
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(hmac.digest(key, body, "sha256"), mac)
            if not matched:
                raise PayloadSignatureError(
                    "dill payload signature does not match: refused, nothing was unpickled"
                )
        import dill  # nosec B403 # reached only past the signature check above

        try:
            # Signed by a holder of the key, or allowed unsigned by the user's own setting
            # (allow_unsigned_dill): see the class docstring and SECURITY.md.
            return dill.loads(body)  # nosec B301 # only signed or explicitly allowed payloads
        except Exception as exc:
            raise SerializationError(f"corrupt dill payload: {exc}") from exc


#: Why unsigned dill is refused, and the two ways out (named in every such error).
_UNSIGNED_HELP = (
    "set secret_key (the same on every producer and worker; OMNIQ_SECRET_KEY), or, if "
    "only trusted parties can write to the store, allow_unsigned_dill=True"
)


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The signing key kept in the file at ``path``, created (mode 0600) if missing.

    What an embedded store signs with when no ``secret_key`` is set: every process that
    shares the store's ``base_dir`` shares the key. Creation is atomic (a complete file is
    linked into place), so processes starting together agree on one key.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "secret_key"
    >>> load_or_create_key(path) == load_or_create_key(path)
    True
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except FileNotFoundError:
        key = b""
    except OSError as exc:
        raise ConfigError(f"the signing key file {path} cannot be read: {exc}") from exc
    if key:
        if os.stat(path).st_mode & 0o006:
            # Anyone on the host who can read it can sign; who can write it, swap it.
            raise ConfigError(
                f"the signing key file {path} is open to every user of this host: "
                f"chmod 600 it (or delete it to make a new key), or set secret_key"
            )
        return key
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, staged = tempfile.mkstemp(dir=folder, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_hex(32).encode())
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it: use theirs
                os.link(staged, path)
        finally:
            os.unlink(staged)
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the signing key file {path} ({exc}); set secret_key instead"
        ) from exc
    if not key:
        raise ConfigError(f"the signing key file {path} is empty; delete it or set secret_key")
    return key


class SerializationManager:
    """Chooses the codec, tags the bytes, and names the culprit when encoding fails.

    ``mode`` is ``"auto"`` (msgspec, dill when needed), ``"msgspec"`` (dill forbidden, both to
    write and to read) or ``"dill"`` (always dill). Any mode reads msgspec payloads.

    Dill payloads are signed and checked with ``secret_key`` (one key, or several: the
    first signs, any verifies); without it, with the key in ``key_file`` (read, or created
    on first use); without either, dill is refused both ways (``SerializationError`` on
    encoding, ``PayloadSignatureError`` on decoding) unless ``allow_unsigned_dill`` is
    True. ``allow_unsigned_dill`` also lets a keyed manager read unsigned payloads. See the
    module docstring for what signing protects against.

    Example::

        >>> manager = SerializationManager()
        >>> manager.loads_call(manager.dumps_call(None, (1, "a"), {"b": 2.5}))
        (None, (1, 'a'), {'b': 2.5})
        >>> manager.dumps(lambda: 1)
        Traceback (most recent call last):
        ...
        omniq.errors.SerializationError: cannot send value (type function) without a signing key...
    """

    def __init__(
        self,
        *,
        mode: str = "auto",
        secret_key: str | bytes | Sequence[str | bytes] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        allow_unsigned_dill: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise ConfigError(f"serializer: expected one of {', '.join(_MODES)}, got {mode!r}")
        self._mode = mode
        self._keys = _keys_of(secret_key)
        self._key_file = None if key_file is None else os.fspath(key_file)
        self._allow_unsigned = bool(allow_unsigned_dill)
        self._signer: DillSerializer | None = None
        self._detector = SerializationDetector()

    @property
    def mode(self) -> str:
        """The mode given at construction."""
        return self._mode

    @property
    def _dill(self) -> DillSerializer:
        # Built on first use: the key file is read (or made) only by a process that meets
        # dill, never by one that only moves msgpack.
        signer = self._signer
        if signer is None:
            keys = self._keys
            if not keys and self._key_file is not None:
                keys = (load_or_create_key(self._key_file),)
            signer = self._signer = DillSerializer(keys)
        return signer

    # -- encoding ------------------------------------------------------------------------

    def dumps(self, value: Any, *, what: str = "value") -> bytes:
        """Encode one value (e.g. a task result); ``what`` names it in errors."""
        if self._mode != "dill":
            try:
                if type(value) in PLAIN or flat(value):
                    try:
                        return _PREFIX_MSGSPEC + ENCODER.encode(value)
                    except OverflowError:
                        pass
                return _PREFIX_MSGSPEC + ENCODER.encode(wire(value))
            except (NeedsDill, RecursionError) as exc:
                if self._mode == "msgspec":
                    offender = exc.offender if isinstance(exc, NeedsDill) else type(value)
                    raise self._strict_error(what, offender, value) from None
        return self._dump_dill(
            value,
            lambda: f"{what} (type {type_name(type(value))})",
            lambda: f"{what} (type {type_name(self._detector.offender(value) or type(value))})",
        )

    def dumps_call(
        self, func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        """Encode a call: ``func`` is None when the function travels by import path."""
        if self._mode != "dill":
            if func is None:
                try:
                    return self._dump_call_msgspec(args, kwargs)
                except (NeedsDill, RecursionError):
                    if self._mode == "msgspec":
                        raise self._strict_call_error(args, kwargs) from None
            elif self._mode == "msgspec":
                raise SerializationError(
                    f"the task function ({type_name(type(func))} {func!r}) cannot travel "
                    "without dill and serializer='msgspec' forbids dill; use an importable "
                    "module-level function or serializer='auto'"
                )
        call = (func, args, kwargs)
        return self._dump_dill(
            call,
            lambda: self._dill_culprit(func, args, kwargs),
            lambda: self._needs_dill_culprit(func, args, kwargs),
        )

    @staticmethod
    def _dump_call_msgspec(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        # Hot path: scalars, and flat lists/dicts of them, are encoded without conversion.
        for arg in args:
            if type(arg) not in FAST and not flat(arg):
                break
        else:
            for key, val in kwargs.items():
                if type(key) is not str or (type(val) not in FAST and not flat(val)):
                    break
            else:
                try:
                    return _PREFIX_MSGSPEC + ENCODER.encode((args, kwargs))
                except OverflowError:  # an int beyond 64 bits: wire gives it a typed form
                    pass
        return _PREFIX_MSGSPEC + ENCODER.encode(([wire(a) for a in args], wire(kwargs)))

    def _dump_dill(
        self, value: Any, culprit: Callable[[], str], needs_dill: Callable[[], str]
    ) -> bytes:
        """``value`` as a tagged dill payload; ``culprit`` names what dill cannot encode,
        ``needs_dill`` what made dill necessary (for the errors)."""
        signer = self._dill
        if not signer.signs and not self._allow_unsigned:
            raise SerializationError(
                f"cannot send {needs_dill()} without a signing key: it needs dill, and on a "
                "shared store (a server or an object store) an unsigned dill payload would let "
                "anyone who can write to the store run code in your workers. To send it, "
                f"{_UNSIGNED_HELP}; or pass an importable module-level function and plain data"
            )
        try:
            body = signer.dumps(value)
        except SerializationError as exc:
            # dill's own complaint, not the wrapper's: that one names the whole call's type.
            cause = exc.__cause__
            reason = str(exc) if cause is None else f"{type(cause).__name__}: {cause}"
            raise SerializationError(f"cannot encode {culprit()} with dill ({reason})") from exc
        return (b"S" if signer.signs else b"D") + body

    def _dill_culprit(
        self, func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        import dill  # nosec B403 # used to pickle (name the culprit), never to load

        for label, value in self._labelled(func, args, kwargs):
            try:
                dill.dumps(value, recurse=True)
            except Exception:
                return f"{label} (type {type_name(type(value))})"
        return "the call"

    def _needs_dill_culprit(
        self, func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        if func is not None:
            return f"the task function {callable_name(func)}"
        for label, value in self._labelled(None, args, kwargs):
            offender = self._detector.offender(value)
            if offender is not None:
                return f"{label} (type {type_name(offender)})"
        return "the call"

    @staticmethod
    def _labelled(
        func: Callable[..., Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> list[tuple[str, Any]]:
        labelled: list[tuple[str, Any]] = [] if func is None else [("the task function", func)]
        labelled += [(f"argument {i}", arg) for i, arg in enumerate(args, start=1)]
        labelled += [(f"keyword argument {key!r}", val) for key, val in kwargs.items()]
        return labelled

    def _strict_call_error(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> SerializationError:
        for label, value in self._labelled(None, args, kwargs):
            offender = self._detector.offender(value)
            if offender is not None:
                return self._strict_error(label, offender, value)
        return SerializationError("cannot encode the call arguments with msgspec")

    @staticmethod
    def _strict_error(what: str, offender: type, value: Any = None) -> SerializationError:
        name = type_name(offender)
        if value is not None and type(value) is not offender:
            name = f"{type_name(type(value))} containing {name}"
        return SerializationError(
            f"cannot encode {what} (type {name}) with msgspec, and serializer='msgspec' "
            "forbids dill; pass plain data or use serializer='auto'"
        )

    # -- decoding ------------------------------------------------------------------------

    def loads(self, data: bytes) -> Any:
        """Decode a payload written by :meth:`dumps` (in any mode)."""
        if not data:
            raise SerializationError("empty payload")
        tag = data[0]
        if tag == _TAG_MSGSPEC:
            try:
                return DECODER.decode(memoryview(data)[1:])
            except Exception as exc:
                raise SerializationError(f"corrupt msgpack payload: {exc}") from exc
        return self._load_dill(tag, data)

    def loads_call(
        self, data: bytes
    ) -> tuple[Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]:
        """Decode a payload written by :meth:`dumps_call` into ``(func, args, kwargs)``."""
        func: Any
        args: Any
        kwargs: Any
        if data[:1] == _PREFIX_MSGSPEC:
            try:
                call = DECODER.decode(memoryview(data)[1:])
            except Exception as exc:
                raise SerializationError(f"corrupt msgpack call payload: {exc}") from exc
            func = None
            args, kwargs = call if type(call) is list and len(call) == 2 else (0, 0)
        else:
            call = self.loads(data)
            func, args, kwargs = call if type(call) is tuple and len(call) == 3 else (0, 0, 0)
        if (
            (func is None or callable(func))
            and type(args) in (list, tuple)
            and type(kwargs) is dict
            and (not kwargs or all(type(key) is str for key in kwargs))
        ):
            return func, tuple(args), kwargs
        raise SerializationError("payload is not a task call (func, args, kwargs)")

    def _load_dill(self, tag: int, data: bytes) -> Any:
        if tag not in (_TAG_DILL, _TAG_SIGNED):
            raise SerializationError(f"unknown payload format tag {tag:#04x}")
        if self._mode == "msgspec":
            raise SerializationError(
                "payload is a dill pickle and serializer='msgspec' forbids dill"
            )
        if tag == _TAG_DILL:
            if not self._allow_unsigned:
                why = "while a signing key is set" if self._dill.signs else "and no key is set"
                raise PayloadSignatureError(
                    f"dill payload is unsigned {why}: refused, nothing was unpickled. "
                    f"Producers and workers need the same key: {_UNSIGNED_HELP}"
                )
            # Allowed unsigned: read it as it is, whatever keys there are.
            return DillSerializer().loads(memoryview(data)[1:])
        signer = self._dill
        if not signer.signs:
            raise PayloadSignatureError(
                "dill payload is signed but no secret_key is set to check it: refused"
            )
        try:
            return signer.loads(memoryview(data)[1:])
        except PayloadSignatureError as exc:
            if self._keys or self._key_file is None:
                raise
            raise PayloadSignatureError(
                f"{exc}; it was signed with another key than this base_dir's "
                f"({self._key_file}): producers and workers of a store share its key when "
                "they share base_dir, or set secret_key on all of them"
            ) from None


def _keys_of(secret_key: str | bytes | Sequence[str | bytes] | None) -> tuple[bytes, ...]:
    """The keys in ``secret_key`` (one, or several to rotate), each non-empty."""
    if secret_key is None:
        return ()
    given = [secret_key] if isinstance(secret_key, str | bytes) else list(secret_key)
    keys = tuple(key.encode() if isinstance(key, str) else key for key in given)
    if not keys or not all(isinstance(key, bytes) and key for key in keys):
        raise ConfigError(
            "secret_key: expected a non-empty string, or a non-empty list of them, got an empty one"
        )
    return keys
