from django.db import models
from django.utils.translation import gettext_lazy as _
from encrypted_model_fields.fields import EncryptedCharField


class Poll(models.Model):
    title = models.CharField(_("title"), max_length=80)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.title


class CalendarLink(models.Model):
    """Like the real Bitpoll's CalDAV calendars: the URL is stored encrypted.

    Importing this module builds the field's crypter, so Django refuses to start
    unless FIELD_ENCRYPTION_KEY is a valid Fernet key.
    """

    name = models.CharField(_("name"), max_length=80)
    url = EncryptedCharField(_("URL"), max_length=255)

    def __str__(self):
        return self.name
